/*
 * NDJSON and CSV rendered from PostgreSQL's binary COPY, off the database's core.
 *
 * PostgreSQL sends each value in its binary form (a few bytes, no text to make); this
 * renders the text rowstream's contract says (each value's row_to_json text, TimeZone UTC),
 * byte for byte what PostgreSQL would have printed: integers, booleans, text (JSON-escaped
 * as PostgreSQL's escape_json does), uuid, date, time, timestamp, timestamptz and numeric
 * follow PostgreSQL's own routines (j2date, dt2time, EncodeDateTime with USE_XSD_DATES,
 * AppendSeconds, get_str_from_var). Every other column comes already rendered by
 * PostgreSQL as text in the same COPY (kind RAW): embedded as it is (NDJSON) or quoted
 * (CSV). app/render.py loads this through ctypes, which releases the GIL for each call, so
 * a worker thread renders while the event loop reads the next COPY data.
 *
 * Built by make: cc -O2 -shared -fPIC -o app/_render.so app/render.c (no Python headers).
 */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define RS_ABI 2

enum kind {
    K_RAW = 0, K_INT2 = 1, K_INT4 = 2, K_INT8 = 3, K_BOOL = 4, K_TEXT = 5, K_UUID = 6,
    K_DATE = 7, K_TIME = 8, K_TIMESTAMP = 9, K_TIMESTAMPTZ = 10, K_NUMERIC = 11
};
enum mode { M_NDJSON = 0, M_CSV = 1 };
enum status { S_MORE = 0, S_FULL = 1, S_END = 2, S_BAD = -1 };

/* What one export renders: the mode, each column's kind and (NDJSON) the text before
 * its value, '{"name":' for the first and ',"name":' for the others. */
typedef struct {
    int32_t mode;
    int32_t ncols;
    const int32_t *kinds;
    const char *const *prefixes;
    const int32_t *prefix_lengths;
} rs_plan;

int rs_abi(void) { return RS_ABI; }

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t be64(const uint8_t *p) {
    return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

static char *put_u64(char *o, uint64_t v) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *o++ = tmp[--n];
    return o;
}

static char *put_i64(char *o, int64_t v) {
    if (v < 0) { *o++ = '-'; return put_u64(o, (uint64_t)0 - (uint64_t)v); }
    return put_u64(o, (uint64_t)v);
}

/* pg_ultostr_zeropad: at least `width` digits. */
static char *put_pad(char *o, uint64_t v, int width) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n < width) tmp[n++] = '0';
    while (n) *o++ = tmp[--n];
    return o;
}

/* PostgreSQL's j2date (src/backend/utils/adt/datetime.c). */
static void j2date(int jd, int *year, int *month, int *day) {
    unsigned int julian, quad, extra;
    int y;
    julian = (unsigned int)jd;
    julian += 32044;
    quad = julian / 146097;
    extra = (julian - quad * 146097) * 4 + 3;
    julian += 60 + quad * 3 + extra / 146097;
    quad = julian / 1461;
    julian -= quad * 1461;
    y = (int)(julian * 4 / 1461);
    julian = ((y != 0) ? ((julian + 305) % 365) : ((julian + 306) % 366)) + 123;
    y += (int)(quad * 4);
    *year = y - 4800;
    quad = julian * 2141 / 65536;
    *day = (int)(julian - 7834 * quad / 256);
    *month = (int)((quad + 10) % 12 + 1);
}

#define POSTGRES_EPOCH_JDATE 2451545
#define USECS_PER_DAY INT64_C(86400000000)

/* The year as EncodeDateOnly prints it (BC years count from 1, " BC" comes last). */
static char *put_ymd(char *o, int y, int m, int d) {
    o = put_pad(o, (uint64_t)(y > 0 ? y : -(y - 1)), 4);
    *o++ = '-';
    o = put_pad(o, (uint64_t)m, 2);
    *o++ = '-';
    return put_pad(o, (uint64_t)d, 2);
}

/* AppendSeconds with fillzeros: two digits, then the fraction without trailing zeros. */
static char *put_seconds(char *o, int sec, int64_t usec) {
    o = put_pad(o, (uint64_t)sec, 2);
    if (usec != 0) {
        char digits[6];
        int n = 6;
        for (int i = 5; i >= 0; i--) { digits[i] = (char)('0' + usec % 10); usec /= 10; }
        while (n > 0 && digits[n - 1] == '0') n--;
        *o++ = '.';
        memcpy(o, digits, (size_t)n);
        o += n;
    }
    return o;
}

static char *put_time(char *o, int64_t t) {
    int64_t hour = t / INT64_C(3600000000);
    t -= hour * INT64_C(3600000000);
    int64_t min = t / 60000000;
    t -= min * 60000000;
    int64_t sec = t / 1000000;
    o = put_pad(o, (uint64_t)hour, 2);
    *o++ = ':';
    o = put_pad(o, (uint64_t)min, 2);
    *o++ = ':';
    return put_seconds(o, (int)sec, t - sec * 1000000);
}

static char *put_text(char *o, const char *s) {
    size_t n = strlen(s);
    memcpy(o, s, n);
    return o + n;
}

static char *put_date(char *o, int32_t v) {
    if (v == INT32_MIN) return put_text(o, "-infinity");
    if (v == INT32_MAX) return put_text(o, "infinity");
    int y, m, d;
    j2date(v + POSTGRES_EPOCH_JDATE, &y, &m, &d);
    o = put_ymd(o, y, m, d);
    if (y <= 0) o = put_text(o, " BC");
    return o;
}

/* EncodeDateTime(USE_XSD_DATES) of timestamp2tm in UTC. */
static char *put_timestamp(char *o, int64_t v, int with_zone) {
    if (v == INT64_MIN) return put_text(o, "-infinity");
    if (v == INT64_MAX) return put_text(o, "infinity");
    int64_t date = v / USECS_PER_DAY;
    int64_t time = v - date * USECS_PER_DAY;
    if (time < 0) { time += USECS_PER_DAY; date -= 1; }
    int y, m, d;
    j2date((int)(date + POSTGRES_EPOCH_JDATE), &y, &m, &d);
    o = put_ymd(o, y, m, d);
    *o++ = 'T';
    o = put_time(o, time);
    if (with_zone) o = put_text(o, "+00:00");
    if (y <= 0) o = put_text(o, " BC");
    return o;
}

static const char HEX[] = "0123456789abcdef";

static char *put_uuid(char *o, const uint8_t *p) {
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = HEX[p[i] >> 4];
        *o++ = HEX[p[i] & 15];
    }
    return o;
}

/* numeric_out: get_str_from_var of the binary form (ndigits, weight, sign, dscale,
 * base-10000 digits). Sets *special for NaN and the infinities (JSON quotes them). */
static char *put_numeric(char *o, const uint8_t *p, int32_t len, int *special) {
    int ndigits = (int16_t)be16(p), weight = (int16_t)be16(p + 2);
    uint16_t sign = be16(p + 4);
    int dscale = (int16_t)be16(p + 6);
    *special = 1;
    if (sign == 0xC000) return put_text(o, "NaN");
    if (sign == 0xD000) return put_text(o, "Infinity");
    if (sign == 0xF000) return put_text(o, "-Infinity");
    *special = 0;
    if (len < 8 + 2 * ndigits || ndigits < 0) return NULL;
    const uint8_t *digits = p + 8;
    int d;
    if (sign == 0x4000) *o++ = '-';
    if (weight < 0) {
        d = weight + 1;
        *o++ = '0';
    } else {
        for (d = 0; d <= weight; d++) {
            int dig = d < ndigits ? be16(digits + 2 * d) : 0;
            int putit = d > 0, d1;
            d1 = dig / 1000; dig -= d1 * 1000; putit |= d1 > 0;
            if (putit) *o++ = (char)(d1 + '0');
            d1 = dig / 100; dig -= d1 * 100; putit |= d1 > 0;
            if (putit) *o++ = (char)(d1 + '0');
            d1 = dig / 10; dig -= d1 * 10; putit |= d1 > 0;
            if (putit) *o++ = (char)(d1 + '0');
            *o++ = (char)(dig + '0');
        }
    }
    if (dscale > 0) {
        *o++ = '.';
        char *end = o + dscale;
        for (int i = 0; i < dscale; d++, i += 4) {
            int dig = (d >= 0 && d < ndigits) ? be16(digits + 2 * d) : 0;
            o[0] = (char)('0' + dig / 1000);
            o[1] = (char)('0' + dig / 100 % 10);
            o[2] = (char)('0' + dig / 10 % 10);
            o[3] = (char)('0' + dig % 10);
            o += 4;
        }
        o = end;
    }
    return o;
}

/* escape_json (src/backend/utils/adt/json.c), without the quotes. */
static char *put_json_string(char *o, const uint8_t *s, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *o++ = (char)c; continue; }
        *o++ = '\\';
        switch (c) {
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
        }
    }
    return o;
}

/* CopyAttributeOutCSV: quoted when empty (the null string is empty), when alone in its
 * row and "\.", or when it holds a comma, a quote or a line break; quotes doubled. */
static char *put_csv(char *o, const uint8_t *s, int32_t n, int single) {
    int quote = n == 0 || (single && n == 2 && s[0] == '\\' && s[1] == '.');
    for (int32_t i = 0; i < n && !quote; i++) {
        uint8_t c = s[i];
        quote = c == ',' || c == '"' || c == '\n' || c == '\r';
    }
    if (!quote) { memcpy(o, s, (size_t)n); return o + n; }
    *o++ = '"';
    for (int32_t i = 0; i < n; i++) {
        if (s[i] == '"') *o++ = '"';
        *o++ = (char)s[i];
    }
    *o++ = '"';
    return o;
}

/* The most bytes one value of `len` binary bytes renders to in `mode`. */
static int64_t bound(int mode, int kind, const uint8_t *p, int32_t len) {
    if (len < 0) return 4;
    switch (kind) {
    case K_RAW: return mode == M_NDJSON ? (int64_t)len : 2 * (int64_t)len + 2;
    case K_TEXT: return mode == M_NDJSON ? 6 * (int64_t)len + 2 : 2 * (int64_t)len + 2;
    case K_NUMERIC: {
        if (len < 8) return 0;
        int weight = (int16_t)be16(p + 2), dscale = (int16_t)be16(p + 6);
        return 4 * (int64_t)(weight > 0 ? weight + 1 : 1) + (dscale > 0 ? dscale : 0) + 16;
    }
    default: return 96;
    }
}

/* PostgreSQL's ranges (datatype/timestamp.h): what time_recv, date_recv and
 * timestamp_recv accept; anything else is malformed input, never rendered. */
#define JULIAN_MAX 2147483494
#define TIMESTAMP_MIN_US INT64_C(-211813488000000000)
#define TIMESTAMP_END_US INT64_C(9223371331200000000)

static int valid(int kind, const uint8_t *p, int32_t len) {
    switch (kind) {
    case K_INT2: return len == 2;
    case K_INT4: return len == 4;
    case K_DATE: {
        if (len != 4) return 0;
        int32_t v = (int32_t)be32(p);
        return v == INT32_MIN || v == INT32_MAX ||
               (v >= -POSTGRES_EPOCH_JDATE && v <= JULIAN_MAX - POSTGRES_EPOCH_JDATE);
    }
    case K_TIME: {
        if (len != 8) return 0;
        int64_t v = (int64_t)be64(p);
        return v >= 0 && v <= USECS_PER_DAY;
    }
    case K_TIMESTAMP: case K_TIMESTAMPTZ: {
        if (len != 8) return 0;
        int64_t v = (int64_t)be64(p);
        return v == INT64_MIN || v == INT64_MAX || (v >= TIMESTAMP_MIN_US && v < TIMESTAMP_END_US);
    }
    case K_INT8: return len == 8;
    case K_BOOL: return len == 1;
    case K_UUID: return len == 16;
    case K_NUMERIC: return len >= 8;
    default: return 1;
    }
}

/* One value, rendered for `mode`; NULL on malformed input. */
static char *put_value(char *o, int mode, int kind, const uint8_t *p, int32_t len, int single) {
    int json = mode == M_NDJSON, special = 0;
    char scratch[80], *s = scratch, *end;
    if (len < 0) return json ? put_text(o, "null") : o;
    if (!valid(kind, p, len)) return NULL;
    switch (kind) {
    case K_RAW:
        if (json) { memcpy(o, p, (size_t)len); return o + len; }
        return put_csv(o, p, len, single);
    case K_TEXT:
        if (!json) return put_csv(o, p, len, single);
        *o++ = '"';
        o = put_json_string(o, p, len);
        *o++ = '"';
        return o;
    case K_INT2: return put_i64(o, (int16_t)be16(p));
    case K_INT4: return put_i64(o, (int32_t)be32(p));
    case K_INT8: return put_i64(o, (int64_t)be64(p));
    case K_BOOL: return put_text(o, p[0] ? "true" : "false");
    case K_NUMERIC:
        if (!json) return put_numeric(o, p, len, &special);
        end = put_numeric(o + 1, p, len, &special);
        if (end == NULL) return NULL;
        if (!special) {  /* a number: no quotes, so move it back over the one reserved */
            memmove(o, o + 1, (size_t)(end - o - 1));
            return end - 1;
        }
        *o = '"';
        *end++ = '"';
        return end;
    case K_UUID: end = put_uuid(s, p); break;
    case K_DATE: end = put_date(s, (int32_t)be32(p)); break;
    case K_TIME: end = put_time(s, (int64_t)be64(p)); break;
    case K_TIMESTAMP: end = put_timestamp(s, (int64_t)be64(p), 0); break;
    case K_TIMESTAMPTZ: end = put_timestamp(s, (int64_t)be64(p), 1); break;
    default: return NULL;
    }
    /* Strings with no character CSV or JSON would escape. */
    if (json) *o++ = '"';
    memcpy(o, scratch, (size_t)(end - scratch));
    o += end - scratch;
    if (json) *o++ = '"';
    return o;
}

/*
 * Render the whole tuples of `in` (binary COPY data after its header) into `out`.
 * Returns S_MORE when every whole tuple was rendered (a partial one is left, unread),
 * S_FULL when `out` has no room for the next tuple (*needed: the room it needs), S_END at
 * the trailer, S_BAD on malformed input. *consumed: input bytes used; *written: output
 * bytes; *rows: tuples.
 */
int rs_render(const rs_plan *plan, const uint8_t *in, int64_t in_len, char *out,
              int64_t out_cap, int64_t *consumed, int64_t *written, int64_t *rows,
              int64_t *needed) {
    int64_t pos = 0, n = 0;
    char *o = out;
    int ncols = plan->ncols, json = plan->mode == M_NDJSON;
    int status = S_MORE;
    while (1) {
        if (in_len - pos < 2) break;
        int16_t fields = (int16_t)be16(in + pos);
        if (fields == -1) { pos += 2; status = S_END; break; }
        if (fields != ncols) { status = S_BAD; break; }
        /* First pass: is the tuple whole, and how much may it render to? */
        int64_t p = pos + 2, need = json ? 2 : 1;
        int whole = 1;
        for (int i = 0; i < ncols; i++) {
            if (in_len - p < 4) { whole = 0; break; }
            int32_t len = (int32_t)be32(in + p);
            p += 4;
            if (len > 0 && in_len - p < len) { whole = 0; break; }
            need += bound(plan->mode, plan->kinds[i], in + p, len) +
                    (json ? plan->prefix_lengths[i] : 1);
            if (len > 0) p += len;
        }
        if (!whole) break;
        if (need > out_cap - (o - out)) { status = S_FULL; *needed = need; break; }
        p = pos + 2;
        for (int i = 0; i < ncols; i++) {
            int32_t len = (int32_t)be32(in + p);
            p += 4;
            if (json) {
                memcpy(o, plan->prefixes[i], (size_t)plan->prefix_lengths[i]);
                o += plan->prefix_lengths[i];
            } else if (i) {
                *o++ = ',';
            }
            o = put_value(o, plan->mode, plan->kinds[i], in + p, len, ncols == 1);
            if (o == NULL) { *consumed = pos; *written = 0; *rows = n; return S_BAD; }
            if (len > 0) p += len;
        }
        if (json) *o++ = '}';
        *o++ = '\n';
        pos = p;
        n++;
    }
    *consumed = pos;
    *written = o - out;
    *rows = n;
    return status;
}
