/* radiusd._walk: the attribute walk of radiusd.codec.Codec.decode, in C.
 *
 * Optional: `pip install .` builds it where a C compiler is found, and the codec falls back
 * to its Python walk where it is not (codec.py, Codec.walk_py and check_framing, the
 * reference: tests check both give the same values and the same Malformed reasons). A
 * decode of a 400-byte Accounting-Request took about 15 us with the Python walk, a
 * twentieth of the server's CPU per request, and 5 us with this one (the walk alone: about
 * 8 us in Python, 1.5 us here).
 *
 *   frame(data, Malformed) -> (code, length)
 *       check_framing: header, length field, attribute framing (a short Vendor-Specific).
 *   walk(packet, standard, vendors, raw_kinds, Malformed) -> (attributes, raw, errors, ma_at)
 *       standard: a 256-tuple of (name, kind, values, decode) or None by attribute type;
 *       vendors: {vendor << 8 | type: (name, kind, values, decode)}; raw_kinds: 256 bytes,
 *       non-zero for the types kept as received octets too. kind: 0 octets, 1 string (UTF-8,
 *       else octets), 2 integer, 3 ipaddr, 4 decode(octets) in Python. values: an integer's
 *       enumerated names, or None. A value that does not fit its type is kept as octets and
 *       its name listed in errors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_PACKET 4096
#define VENDOR_SPECIFIC 26
#define MESSAGE_AUTHENTICATOR 80
#define DIGEST_ATTRIBUTES 207

static void
malformed(PyObject *cls, const char *reason, PyObject *detail)
{
    PyObject *exc = detail ? PyObject_CallFunction(cls, "sO", reason, detail)
                           : PyObject_CallFunction(cls, "s", reason);
    Py_XDECREF(detail);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

static PyObject *
frame(PyObject *module, PyObject *args)
{
    PyObject *data, *cls;
    if (!PyArg_ParseTuple(args, "SO", &data, &cls))
        return NULL;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size < 20) {
        malformed(cls, "truncated", PyUnicode_FromFormat("%zd bytes", size));
        return NULL;
    }
    if (size > MAX_PACKET) {
        malformed(cls, "oversized", PyUnicode_FromFormat("%zd bytes", size));
        return NULL;
    }
    Py_ssize_t length = (p[2] << 8) | p[3];
    if (length < 20 || length > size) {
        malformed(cls, "bad_length",
                  PyUnicode_FromFormat("length field %zd, datagram %zd", length, size));
        return NULL;
    }
    Py_ssize_t pos = 20;
    while (pos < length) {
        if (pos + 2 > length) {
            malformed(cls, "bad_attribute",
                      PyUnicode_FromString("attribute header overruns the packet"));
            return NULL;
        }
        Py_ssize_t attr_len = p[pos + 1];
        if (attr_len < 2 || pos + attr_len > length) {
            malformed(cls, "bad_attribute",
                      PyUnicode_FromFormat("attribute %d length %zd", (int)p[pos], attr_len));
            return NULL;
        }
        if (p[pos] == VENDOR_SPECIFIC && attr_len < 8) {
            malformed(cls, "bad_attribute", PyUnicode_FromString("short Vendor-Specific"));
            return NULL;
        }
        pos += attr_len;
    }
    return Py_BuildValue("(in)", (int)p[0], length);
}

/* one value by its entry; a new reference, or NULL with an exception set */
static PyObject *
decode_value(PyObject *entry, const char *raw, Py_ssize_t n, PyObject *errors, PyObject *cls)
{
    PyObject *name = PyTuple_GET_ITEM(entry, 0);
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(entry, 1));
    PyObject *values = PyTuple_GET_ITEM(entry, 2);
    const unsigned char *u = (const unsigned char *)raw;
    PyObject *value = NULL;
    switch (kind) {
    case 1:
        value = PyUnicode_DecodeUTF8(raw, n, NULL);
        if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return PyBytes_FromStringAndSize(raw, n);
        }
        return value;
    case 2:
        if (n != 4)
            break;
        value = PyLong_FromUnsignedLong(((unsigned long)u[0] << 24) | ((unsigned long)u[1] << 16) |
                                        ((unsigned long)u[2] << 8) | (unsigned long)u[3]);
        if (value != NULL && values != Py_None) {
            PyObject *named = PyDict_GetItemWithError(values, value);
            if (named != NULL) {
                Py_INCREF(named);
                Py_DECREF(value);
                return named;
            }
            if (PyErr_Occurred()) {
                Py_DECREF(value);
                return NULL;
            }
        }
        return value;
    case 3:
        if (n != 4)
            break;
        return PyUnicode_FromFormat("%d.%d.%d.%d", u[0], u[1], u[2], u[3]);
    case 4: {
        PyObject *octets = PyBytes_FromStringAndSize(raw, n);
        if (octets == NULL)
            return NULL;
        value = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 3), octets);
        if (value == NULL && PyErr_ExceptionMatches(cls)) {
            PyErr_Clear();
            if (PyList_Append(errors, name) < 0) {
                Py_DECREF(octets);
                return NULL;
            }
            return octets;
        }
        Py_DECREF(octets);
        return value;
    }
    default:
        return PyBytes_FromStringAndSize(raw, n);
    }
    /* a value that does not fit its type: kept as octets, named in errors */
    if (PyList_Append(errors, name) < 0)
        return NULL;
    return PyBytes_FromStringAndSize(raw, n);
}

/* dict[key] += [value]; steals value */
static int
append(PyObject *dict, PyObject *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    PyObject *list = PyDict_GetItemWithError(dict, key);
    int failed;
    if (list != NULL) {
        failed = PyList_Append(list, value);
    } else if (PyErr_Occurred()) {
        failed = -1;
    } else {
        list = PyList_New(1);
        if (list == NULL) {
            Py_DECREF(value);
            return -1;
        }
        Py_INCREF(value);
        PyList_SET_ITEM(list, 0, value);
        failed = PyDict_SetItem(dict, key, list);
        Py_DECREF(list);
    }
    Py_DECREF(value);
    return failed;
}

static PyObject *
walk(PyObject *module, PyObject *args)
{
    PyObject *packet, *standard, *vendors, *raw_kinds, *cls;
    if (!PyArg_ParseTuple(args, "SO!O!SO", &packet, &PyTuple_Type, &standard, &PyDict_Type,
                          &vendors, &raw_kinds, &cls))
        return NULL;
    if (PyTuple_GET_SIZE(standard) != 256 || PyBytes_GET_SIZE(raw_kinds) != 256) {
        PyErr_SetString(PyExc_ValueError, "standard and raw_kinds hold 256 entries");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(packet);
    const unsigned char *u = (const unsigned char *)p;
    const char *raw_kind = PyBytes_AS_STRING(raw_kinds);
    Py_ssize_t length = PyBytes_GET_SIZE(packet);
    PyObject *attributes = PyDict_New();
    PyObject *raw = PyDict_New();
    PyObject *errors = PyList_New(0);
    if (attributes == NULL || raw == NULL || errors == NULL)
        goto fail;
    Py_ssize_t ma_at = -1;
    Py_ssize_t pos = 20;
    /* (framing is frame()'s: every attribute here fits the packet) */
    while (pos + 2 <= length) {
        int kind = u[pos];
        Py_ssize_t size = u[pos + 1];
        if (size < 2 || pos + size > length) {
            malformed(cls, "bad_attribute", PyUnicode_FromString("not framed"));
            goto fail;
        }
        const char *value = p + pos + 2;
        Py_ssize_t end = size - 2;
        if (kind == VENDOR_SPECIFIC) {
            const unsigned char *v = (const unsigned char *)value;
            unsigned long long vendor = 0;
            if (end >= 4)
                vendor = ((unsigned long long)v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3];
            Py_ssize_t sub = 4;
            while (sub + 2 <= end) {
                int vtype = v[sub];
                Py_ssize_t vlen = v[sub + 1];
                if (vlen < 2 || sub + vlen > end) {
                    malformed(cls, "bad_attribute",
                              PyUnicode_FromString("Vendor-Specific sub-attribute"));
                    goto fail;
                }
                PyObject *key = PyLong_FromUnsignedLongLong((vendor << 8) | (unsigned)vtype);
                if (key == NULL)
                    goto fail;
                PyObject *entry = PyDict_GetItemWithError(vendors, key);
                Py_DECREF(key);
                if (entry != NULL) {
                    PyObject *decoded = decode_value(entry, value + sub + 2, vlen - 2, errors, cls);
                    if (append(attributes, PyTuple_GET_ITEM(entry, 0), decoded) < 0)
                        goto fail;
                } else if (PyErr_Occurred()) {
                    goto fail;
                }
                sub += vlen;
            }
        } else {
            if (kind == MESSAGE_AUTHENTICATOR) {
                if (size != 18 || ma_at >= 0) {
                    malformed(cls, "bad_message_authenticator", NULL);
                    goto fail;
                }
                ma_at = pos;
            }
            if (raw_kind[kind]) {
                PyObject *key = PyLong_FromLong(kind);
                if (key == NULL)
                    goto fail;
                int failed = append(raw, key, PyBytes_FromStringAndSize(value, end));
                Py_DECREF(key);
                if (failed < 0)
                    goto fail;
                if (kind == DIGEST_ATTRIBUTES) { /* its sub-attributes: read from the octets */
                    pos += size;
                    continue;
                }
            }
            PyObject *entry = PyTuple_GET_ITEM(standard, kind);
            if (entry != Py_None) {
                PyObject *decoded = decode_value(entry, value, end, errors, cls);
                if (append(attributes, PyTuple_GET_ITEM(entry, 0), decoded) < 0)
                    goto fail;
            }
        }
        pos += size;
    }
    PyObject *result = Py_BuildValue("(NNNn)", attributes, raw, errors, ma_at);
    return result;
fail:
    Py_XDECREF(attributes);
    Py_XDECREF(raw);
    Py_XDECREF(errors);
    return NULL;
}

static PyMethodDef methods[] = {
    {"frame", frame, METH_VARARGS, "check_framing in C: (code, length), or Malformed raised"},
    {"walk", walk, METH_VARARGS, "the attribute walk of Codec.decode in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "radiusd._walk", "Codec.decode's attribute walk, in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__walk(void)
{
    return PyModule_Create(&module);
}
