"""The datasets the generic tests serve: a table of every supported type (with NULLs and
hard values), a table with a composite key and odd identifiers, a view, and a saved
query with a parameter. Built in a database of its own; ``DATASETS`` declares them."""

from __future__ import annotations

ZOO_ROWS = 300

SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE zoo (
    id    integer PRIMARY KEY,
    i2    smallint,
    i4    integer,
    i8    bigint,
    n     numeric,
    n52   numeric(5,2),
    r     real,
    d     double precision,
    b     boolean,
    t     text,
    vc    varchar(10),
    c3    char(3),
    u     uuid,
    dt    date,
    tm    time,
    ts    timestamp,
    tstz  timestamptz,
    iv    interval,
    by    bytea,
    j     json,
    jb    jsonb,
    ia    integer[],
    ta    text[],
    m     mood,
    ip    inet
);
-- row 1: NULL everywhere; row 2: extremes and hard text; rows 3..: generated
INSERT INTO zoo (id) VALUES (1);
INSERT INTO zoo VALUES (
    2, -32768, 2147483647, -9223372036854775808,
    '123456789012345678901234567890.123456789012345', -999.99, 'NaN', '-Infinity',
    true, E'quote " backslash \\ newline \n tab \t cr \r ctl \x01 é ✓ 𝄞 </script>', '',
    'a', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.999999',
    '1999-12-31 23:59:59.123456', '2024-06-30 22:00:00.5-02', '1 year 2 mons 3 days 04:05:06.7',
    '\x00ff0a', E'{"a": [1,\n 2.50], "b": "x\\ny", "c": null}', '{"b": 1e3, "a": [true, null]}',
    '{1,NULL,-3}', '{"a,b","c\"d",NULL,""}', 'happy', '192.168.0.1/24'
);
INSERT INTO zoo
SELECT i,
       (i % 100)::smallint,
       i * 1000,
       i::bigint * 10000000000,
       (i / 7.0)::numeric,
       ((i % 1000) / 10.0)::numeric(5,2),
       (i / 4.0)::real,
       (i / 3.0)::double precision,
       i % 2 = 0,
       CASE WHEN i % 10 = 0 THEN NULL WHEN i % 7 = 0 THEN i || '% off_' ELSE 'text ' || i END,
       'v' || (i % 50),
       chr(97 + i % 26),
       md5(i::text)::uuid,
       date '2024-01-01' + i,
       time '00:00' + i * interval '1 minute',
       timestamp '2024-01-01' + i * interval '1 hour',
       timestamptz '2024-01-01 00:00+00' + i * interval '90 minutes',
       i * interval '1 second',
       decode(lpad(to_hex(i), 4, '0'), 'hex'),
       json_build_object('i', i),
       jsonb_build_object('i', i, 'even', i % 2 = 0),
       ARRAY[i, i + 1],
       ARRAY['x' || i],
       (ARRAY['sad', 'ok', 'happy'])[i % 3 + 1]::mood,
       ('10.0.' || (i % 256) || '.1')::inet
FROM generate_series(3, {rows}) AS i;

-- timestamps COPY prints unlike JSON: before year 1, infinite, beyond 9999
-- (g: an array, so a selection with it takes Arrow's cursor-records path)
CREATE TABLE stamps (id int PRIMARY KEY, ts timestamp, tstz timestamptz, dt date, g int[]);
INSERT INTO stamps VALUES
    (1, '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00+00 BC', '0044-03-15 BC', '{1}'),
    (2, 'infinity', '-infinity', 'infinity', '{2}'),
    (3, '12345-06-07 08:09:10.5', '12345-06-07 08:09:10.5+00', '12345-06-07', '{3}'),
    (4, '0001-01-01 00:00:00', '0001-01-01 00:00:00+00', '0001-01-01', '{4}'),
    (5, '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.999999+00', '2024-02-29', '{5}');

CREATE TABLE "Order Items" (
    "Order"   integer NOT NULL,
    "select"  date    NOT NULL,
    "línea ✓" text,
    "a""b"    text,
    PRIMARY KEY ("Order", "select")
);
INSERT INTO "Order Items"
SELECT o, date '2024-01-01' + d, 'línea ' || o || '/' || d, 'q"' || d
FROM generate_series(1, 40) AS o, generate_series(0, 9) AS d;

CREATE TABLE events (day date NOT NULL, channel text NOT NULL, n integer NOT NULL);
INSERT INTO events
SELECT date '2024-01-01' + (i % 20), (ARRAY['sms', 'email', 'push'])[i % 3 + 1], i
FROM generate_series(1, 600) AS i;
CREATE VIEW events_view AS SELECT day, channel, n FROM events WHERE n % 2 = 0;
CREATE UNIQUE INDEX events_n ON events (n);
ANALYZE;
""".replace("{rows}", str(ZOO_ROWS))

#: The zoo's columns, in table order.
ZOO_COLUMNS = [
    "id",
    "i2",
    "i4",
    "i8",
    "n",
    "n52",
    "r",
    "d",
    "b",
    "t",
    "vc",
    "c3",
    "u",
    "dt",
    "tm",
    "ts",
    "tstz",
    "iv",
    "by",
    "j",
    "jb",
    "ia",
    "ta",
    "m",
    "ip",
]

DATASETS = """
[datasets.zoo]
table = "zoo"
description = "Every supported type"

[datasets.stamps]
table = "stamps"

[datasets.order_items]
table = "Order Items"

[datasets.events_view]
table = "events_view"
key = ["n"]

[datasets.daily]
query = '''
SELECT day, channel, count(*)::int AS n, ':not_a_param' AS s -- :nor_this
FROM events WHERE day >= :since GROUP BY 1, 2
'''
key = ["day", "channel"]
params = { since = "date" }

[datasets.unordered]
query = "SELECT n, channel FROM events WHERE n <= 10"
"""
