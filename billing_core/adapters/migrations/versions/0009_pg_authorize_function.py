"""the check-and-hold on PostgreSQL in one round trip: a plpgsql function

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Adds, on PostgreSQL only, ``billing_authorize``: the live state on the database
(``SqlLiveState``, no Redis) locks the client's live balance, finds the request's own call,
sums what the client's other calls hold, decides as ``domain.policy.decide`` does and
writes the hold, all in one statement (README: the live state on the database). The
policy's twin in SQL (``billing_decide``, ``billing_grant``, ``billing_cost``) works in
integer micro-units, as the columns do; a property test holds it to the Python policy.

An authorization whose call the database has already charged (a CDR of the call written
after the request arrived: a request that waited in a database thread past its own call's
Stop) holds nothing: the same call is never held twice. SQLite keeps the Python path.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# CONTRACT §3: billed seconds and their cost, half-up to the micro-unit (domain.rating.cost)
_COST = """
CREATE OR REPLACE FUNCTION billing_cost(
    rate bigint, setup bigint, min_volume int, step int, grace int, duration int
) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN duration <= 0 OR duration <= grace THEN 0::bigint
        ELSE setup + (2 * rate * (CASE
            WHEN duration <= min_volume THEN min_volume
            ELSE min_volume + ((duration - min_volume + step - 1) / step) * step
        END)::bigint + 60) / 120
    END
    -- billed 0 costs 0; else setup + round_half_up(rate x billed / 60)
$$;
"""

# domain.rating.grant: the longest affordable duration, max_call_length or a grid point
_GRANT = """
CREATE OR REPLACE FUNCTION billing_grant(
    rate bigint, setup bigint, min_volume int, step int, grace int, funds bigint, mcl int
) RETURNS int LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    g1 int := greatest(min_volume, step);
    lo int;
    hi int;
    mid int;
BEGIN
    IF billing_cost(rate, setup, min_volume, step, grace, mcl) <= funds THEN
        RETURN mcl;
    END IF;
    lo := greatest(0, (g1 - min_volume + step - 1) / step);
    hi := floor((mcl - min_volume)::numeric / step)::int;
    IF hi < lo THEN
        RETURN 0;
    END IF;
    IF billing_cost(rate, setup, min_volume, step, grace, min_volume + lo * step) > funds THEN
        RETURN 0;
    END IF;
    WHILE lo < hi LOOP
        mid := (lo + hi + 1) / 2;
        IF billing_cost(rate, setup, min_volume, step, grace, min_volume + mid * step) <= funds
        THEN
            lo := mid;
        ELSE
            hi := mid - 1;
        END IF;
    END LOOP;
    RETURN min_volume + lo * step;
END
$$;
"""

# domain.policy.decide, in the contract's order: (reason, grant seconds, hold, funds);
# reason NULL accepts. rate NULL: authentication only.
_DECIDE = """
CREATE OR REPLACE FUNCTION billing_decide(
    balance bigint, held bigint, in_use int,
    credit bigint, postpaid boolean, capacity int, low_threshold bigint, low_capacity int,
    rate bigint, setup bigint, min_volume int, step int, grace int, mcl int,
    OUT reason text, OUT grant_seconds int, OUT hold bigint, OUT funds bigint
) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    available bigint := balance + credit;
    cap int := capacity;
    seconds int;
BEGIN
    funds := available - held;
    IF rate IS NULL THEN
        IF NOT postpaid AND available <= 0 THEN
            reason := CASE WHEN credit = 0 THEN 'zero_balance' ELSE 'credit_limit' END;
            funds := NULL;
            RETURN;
        END IF;
        hold := 0;
        IF postpaid THEN funds := NULL; END IF;
        RETURN;
    END IF;
    IF low_threshold IS NOT NULL AND low_capacity IS NOT NULL AND available < low_threshold
    THEN
        cap := low_capacity;
    END IF;
    IF cap IS NOT NULL AND in_use >= cap THEN
        reason := 'capacity'; funds := NULL; RETURN;
    END IF;
    IF postpaid THEN
        grant_seconds := mcl; hold := 0; funds := NULL; RETURN;
    END IF;
    IF available <= 0 THEN
        reason := CASE WHEN credit = 0 THEN 'zero_balance' ELSE 'credit_limit' END;
        funds := NULL;
        RETURN;
    END IF;
    IF funds < billing_cost(rate, setup, min_volume, step, grace, greatest(min_volume, step))
    THEN
        reason := 'insufficient_funds'; funds := NULL; RETURN;
    END IF;
    seconds := billing_grant(rate, setup, min_volume, step, grace, funds, mcl);
    IF seconds < 1 THEN
        reason := 'insufficient_funds'; funds := NULL; RETURN;
    END IF;
    grant_seconds := seconds;
    hold := billing_cost(rate, setup, min_volume, step, grace, seconds);
END
$$;
"""

# The lookups by identifier, one identifier at a time: equality on every column of the index
# they use, so that the plan a session caches (planned while the tables were small) is an
# index probe still when they are large, never a scan of a NAS's calls or CDRs.
_OWN_CALL = """
CREATE OR REPLACE FUNCTION billing_own_call(
    p_nas_key text, p_keys text[], p_account_id int, p_called text
) RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key text;
    v_id bigint;
    v_own bigint;
BEGIN
    FOREACH v_key IN ARRAY p_keys LOOP
        FOR v_id IN
            SELECT k.call_id FROM call_keys k WHERE k.nas_key = p_nas_key AND k.key = v_key
        LOOP
            SELECT c.id INTO v_own FROM calls c
            WHERE c.id = v_id AND c.account_id = p_account_id AND c.called = p_called;
            IF FOUND THEN
                RETURN v_own;
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;
"""

# a CDR of the client's call under one of the identifiers, in the NAS key's current epoch,
# written at or after p_now (the uq_cdrs_leg_once index: NAS key, epoch, Acct-Session-Id)
_CHARGED_SINCE = """
CREATE OR REPLACE FUNCTION billing_charged_since(
    p_nas_key text, p_keys text[], p_client_id int, p_now timestamp
) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key text;
    v_epoch int;
BEGIN
    IF cardinality(p_keys) = 0 THEN
        RETURN false;
    END IF;
    SELECT e.epoch INTO v_epoch FROM nas_epochs e WHERE e.nas_key = p_nas_key;
    v_epoch := coalesce(v_epoch, 0);
    FOREACH v_key IN ARRAY p_keys LOOP
        IF EXISTS (
            SELECT 1 FROM cdrs
            WHERE cdrs.nas_key = p_nas_key AND cdrs.epoch = v_epoch
                AND cdrs.acct_session_id = v_key
                AND cdrs.client_id = p_client_id AND cdrs.created_at >= p_now
        ) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
"""

# SqlLiveState.authorize on PostgreSQL: one statement, one round trip. The client's live
# balance row is locked first (created at zero when missing), so the check and the hold of
# one client are one step; the own call (same NAS key, an identifier, account and number)
# is refreshed, never held again; a call already charged after the request arrived is not
# held at all. Every statement of a volatile function reads what committed before it.
_AUTHORIZE = """
CREATE OR REPLACE FUNCTION billing_authorize(
    p_client_id int, p_account_id int, p_lock_check boolean, p_now timestamp,
    p_nas_key text, p_keys text[], p_called text, p_acct_session_id text, p_uid text,
    p_hold_expires_at timestamp,
    p_credit bigint, p_postpaid boolean, p_capacity int, p_low_threshold bigint,
    p_low_capacity int,
    p_rate bigint, p_setup bigint, p_min_volume int, p_step int, p_grace int, p_mcl int,
    OUT reason text, OUT grant_seconds int, OUT hold bigint, OUT funds bigint
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_balance bigint;
    v_own bigint;
    v_held bigint;
    v_count int;
    v_call bigint;
BEGIN
    IF p_lock_check AND EXISTS (
        SELECT 1 FROM auth_failures
        WHERE account_id = p_account_id AND locked_until > p_now
    ) THEN
        reason := 'locked_out';
        RETURN;
    END IF;
    SELECT balance INTO v_balance FROM live_balances WHERE client_id = p_client_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO live_balances (client_id, balance) VALUES (p_client_id, 0)
            ON CONFLICT DO NOTHING;
        SELECT balance INTO STRICT v_balance FROM live_balances
            WHERE client_id = p_client_id FOR UPDATE;
    END IF;
    v_own := billing_own_call(p_nas_key, p_keys, p_account_id, p_called);
    SELECT coalesce(sum(c.hold), 0), count(*) INTO v_held, v_count FROM calls c
    WHERE c.client_id = p_client_id
        AND (c.state = 'active' OR (c.state = 'held' AND c.hold_expires_at > p_now))
        AND c.id <> coalesce(v_own, 0);
    SELECT d.reason, d.grant_seconds, d.hold, d.funds
        INTO reason, grant_seconds, hold, funds
        FROM billing_decide(
            v_balance, v_held, v_count, p_credit, p_postpaid, p_capacity, p_low_threshold,
            p_low_capacity, p_rate, p_setup, p_min_volume, p_step, p_grace, p_mcl
        ) d;
    IF p_rate IS NULL THEN  -- authentication only: nothing held
        RETURN;
    END IF;
    IF reason IS NOT NULL THEN
        DELETE FROM calls WHERE id = v_own;
        RETURN;
    END IF;
    IF v_own IS NOT NULL THEN
        UPDATE calls SET hold = billing_authorize.hold,
            granted_seconds = billing_authorize.grant_seconds,
            hold_expires_at = p_hold_expires_at, authorized_at = p_now
        WHERE id = v_own;
        RETURN;
    END IF;
    IF billing_charged_since(p_nas_key, p_keys, p_client_id, p_now) THEN
        RETURN;  -- its call was charged after this request came: a late twin holds nothing
    END IF;
    INSERT INTO calls (
        client_id, account_id, nas_key, acct_session_id, called, live_uid, state,
        max_session_time, charged, epoch, accounted, conf_id, origin, tags,
        hold, granted_seconds, hold_expires_at, authorized_at
    ) VALUES (
        p_client_id, p_account_id, p_nas_key, p_acct_session_id, p_called, p_uid, 'held',
        0, false, 0, false, '', '', '',
        billing_authorize.hold, billing_authorize.grant_seconds, p_hold_expires_at, p_now
    ) RETURNING id INTO v_call;
    INSERT INTO call_keys (call_id, nas_key, key)
        SELECT DISTINCT v_call, p_nas_key, k FROM unnest(p_keys) AS k
        ON CONFLICT DO NOTHING;
END
$$;
"""

_FUNCTIONS = (
    "billing_authorize(int, int, boolean, timestamp, text, text[], text, text, text, "
    "timestamp, bigint, boolean, int, bigint, int, bigint, bigint, int, int, int, int)",
    "billing_own_call(text, text[], int, text)",
    "billing_charged_since(text, text[], int, timestamp)",
    "billing_decide(bigint, bigint, int, bigint, boolean, int, bigint, int, bigint, bigint, "
    "int, int, int, int)",
    "billing_grant(bigint, bigint, int, int, int, bigint, int)",
    "billing_cost(bigint, bigint, int, int, int, int)",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for ddl in (_COST, _GRANT, _DECIDE, _OWN_CALL, _CHARGED_SINCE, _AUTHORIZE):
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
