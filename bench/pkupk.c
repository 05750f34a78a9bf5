/* pkupk: the copies PvmDataRaw itself makes for one message, with no transfer at all:
 * pvm_pkbyte into a send buffer, then pvm_upkbyte of that buffer made the receive buffer.
 * Run enrolled on any daemon, with either library: pkupk 16777216 30.
 * Build: cc -O2 -o pkupk bench/pkupk.c -lpvm3 (LD_LIBRARY_PATH picks the library). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#include "timing.h"

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 16 << 20;
	int it = argc > 2 ? atoi(argv[2]) : 20;
	char *src = malloc(n), *dst = malloc(n);
	memset(src, 1, n);
	memset(dst, 2, n);
	if (pvm_mytid() < 0)
		return 1;
	double *pk = calloc(it, sizeof *pk), *upk = calloc(it, sizeof *upk), *both = calloc(it, sizeof *both);
	for (int i = 0; i < it; i++) {
		double t0 = now_us();
		int sb = pvm_initsend(PvmDataRaw);
		pvm_pkbyte(src, n, 1);
		double t1 = now_us();
		/* The send buffer becomes the receive buffer (the previous one is freed). */
		pvm_setsbuf(0);
		int old = pvm_setrbuf(sb);
		if (old > 0)
			pvm_freebuf(old);
		pvm_upkbyte(dst, n, 1);
		double t2 = now_us();
		pk[i] = t1 - t0;
		upk[i] = t2 - t1;
		both[i] = t2 - t0;
	}
	qsort(pk, it, sizeof *pk, cmp_double);
	qsort(upk, it, sizeof *upk, cmp_double);
	qsort(both, it, sizeof *both, cmp_double);
	printf("pkupk %ld pack %.0f/%.0f unpack %.0f/%.0f both %.0f/%.0f (min/median us)\n", n, pk[0], pk[it / 2],
	       upk[0], upk[it / 2], both[0], both[it / 2]);
	pvm_exit();
	return 0;
}
