/*
 * Throughput of the legacy libpvm3 packer, XDR (PvmDataDefault) and raw (PvmDataRaw):
 * pvm_pkint/pvm_upkint and pvm_pkdouble/pvm_upkdouble on 1 MB arrays, the same data and
 * repetition scheme as
 * pvm-proto/benches/pack.rs (median of REPS runs after one warm-up). No pvmd is needed.
 * Output lines: "bench NAME VALUE MB/s".
 * Build: gcc -O2 -o legacy-pack-bench ci/legacy-pack-bench.c -lpvm3
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#include "../bench/timing.h"

#define MB (1 << 20)

static int *ints;
static double *dbls;
static int *iout;
static double *dout;
static int mid;

static int enc;

static void pack_int(void) { pvm_initsend(enc); pvm_pkint(ints, MB / 4, 1); }
static void pack_double(void) { pvm_initsend(enc); pvm_pkdouble(dbls, MB / 8, 1); }
/* Re-arm the receive buffer: setsbuf flips it to packing, setrbuf back to unpacking at byte 0. */
static void unpack_int(void) { pvm_setsbuf(mid); pvm_setrbuf(mid); pvm_upkint(iout, MB / 4, 1); }
static void unpack_double(void) { pvm_setsbuf(mid); pvm_setrbuf(mid); pvm_upkdouble(dout, MB / 8, 1); }

static double measure(int reps, void (*f)(void))
{
	double *t = malloc(reps * sizeof(double)), m;
	int i;

	f();
	for (i = 0; i < reps; i++) {
		double s = now_us() * 1e-6;
		f();
		t[i] = now_us() * 1e-6 - s;
	}
	qsort(t, reps, sizeof(double), cmp_double);
	m = t[reps / 2];
	free(t);
	return m;
}

/* Measures packing with `pack` and unpacking with `unpack` (into `out`, checked against `in`),
 * printing both figures; 1 if the bytes differ. */
static int round_trip(int reps, const char *enc_name, const char *type, void (*pack)(void),
		      void (*unpack)(void), void *out, const void *in)
{
	printf("bench %s_pack_%s_1MB %.1f MB/s\n", enc_name, type, 1.0 / measure(reps, pack));
	pack();
	mid = pvm_getsbuf();
	memset(out, 0, MB);
	printf("bench %s_unpack_%s_1MB %.1f MB/s\n", enc_name, type, 1.0 / measure(reps, unpack));
	if (memcmp(out, in, MB)) {
		fprintf(stderr, "legacy %s %s round trip differs\n", enc_name, type);
		return 1;
	}
	pvm_setsbuf(0);
	pvm_freebuf(mid);
	return 0;
}

int main(void)
{
	int reps = getenv("PACK_BENCH_REPS") ? atoi(getenv("PACK_BENCH_REPS")) : 31;
	int i;

	ints = malloc(MB);
	dbls = malloc(MB);
	iout = malloc(MB);
	dout = malloc(MB);
	for (i = 0; i < MB / 4; i++)
		ints[i] = (int)((unsigned)i * 2654435761u);
	for (i = 0; i < MB / 8; i++)
		dbls[i] = i * 1.000001;

	for (int e = 0; e < 2; e++) {
		const char *name = e ? "raw" : "xdr";
		enc = e ? PvmDataRaw : PvmDataDefault;
		if (round_trip(reps, name, "int", pack_int, unpack_int, iout, ints) ||
		    round_trip(reps, name, "double", pack_double, unpack_double, dout, dbls))
			return 1;
	}
	return 0;
}
