"""The benchmark: `make bench` (or `python -m bench`) measures the server against FreeRADIUS.

Modules: ``datagen`` (carrier-scale data sets, loaded through ``billingctl``), ``packets``
(requests pre-encoded with pyrad, replies verified), ``loadgen`` (the asyncio load generator),
``scenarios`` (what is sent), ``targets`` (our server, FreeRADIUS static and with rlm_sql),
``procstat`` (CPU and memory from /proc), ``profiling`` (py-spy), ``report`` (BENCHMARKS.md),
``cli`` (one run, end to end).
"""
