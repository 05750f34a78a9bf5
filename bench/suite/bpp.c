/* bpp: PVM ping-pong and multicast workload for ci/bench (any libpvm3: legacy or ours).
 *   bpp [-d] [-e raw|def|inplace] [-n iters] [-H host] size...   ping-pong, one line per size:
 *       "pp SIZE ROUTE ITERS MIN_US MED_US MAX_US"
 *   bpp -m N [-n iters]                                         pvm_mcast of 8 B to N tasks, each
 *       replies; "mcast N ITERS MIN_US MED_US MAX_US" (time until all N replies are in)
 * The echo tasks are this program spawned with -slave; -H places the echo task on that host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#include "../timing.h"

#define MAXBUF (17 << 20)

static int parse_enc(const char *s)
{
	if (!strcmp(s, "def")) return PvmDataDefault;
	if (!strcmp(s, "inplace")) return PvmDataInPlace;
	return PvmDataRaw;
}

/* Echo every message back to its sender with tag 2 until tag 9 arrives. */
static void echo_loop(int enc)
{
	char *buf = malloc(MAXBUF);
	for (;;) {
		int bid = pvm_recv(-1, -1), len, tag, src, n;
		/* An error (the pvmd is gone) would come back at once for ever: stop, not spin. */
		if (bid < 0) break;
		pvm_bufinfo(bid, &len, &tag, &src);
		if (tag == 9) break;
		pvm_upkint(&n, 1, 1);
		if (n > 0 && n <= MAXBUF) pvm_upkbyte(buf, n, 1);
		pvm_initsend(enc);
		pvm_pkint(&n, 1, 1);
		if (n > 0 && n <= MAXBUF) pvm_pkbyte(buf, n, 1);
		pvm_send(src, 2);
	}
}

static void report(const char *what, const char *a, const char *b, double *rt, int it)
{
	qsort(rt, it, sizeof(double), cmp_double);
	printf("%s %s %s %d %.1f %.1f %.1f\n", what, a, b, it, rt[0], rt[it / 2], rt[it - 1]);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int direct = 0, enc = PvmDataRaw, iters = 200, slave = 0, mcast = 0, i;
	const char *encname = "raw", *host = "";
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-slave")) slave = 1;
		else if (!strcmp(argv[i], "-d")) direct = 1;
		else if (!strcmp(argv[i], "-e") && i + 1 < argc) { encname = argv[++i]; enc = parse_enc(encname); }
		else if (!strcmp(argv[i], "-n") && i + 1 < argc) iters = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-m") && i + 1 < argc) mcast = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-H") && i + 1 < argc) host = argv[++i];
	}
	if (pvm_mytid() < 0) { fprintf(stderr, "bpp: pvm_mytid failed\n"); return 1; }
	if (direct) pvm_setopt(PvmRoute, PvmRouteDirect);
	if (slave) { echo_loop(enc); pvm_exit(); return 0; }
	if (iters < 1) iters = 1;

	int ntask = mcast > 0 ? mcast : 1, k;
	int *tids = malloc(sizeof(int) * ntask);
	char *sargv[6];
	k = 0;
	sargv[k++] = "-slave";
	if (direct) sargv[k++] = "-d";
	sargv[k++] = "-e";
	sargv[k++] = (char *)encname;
	sargv[k] = 0;
	int got = pvm_spawn("bpp", sargv, *host ? PvmTaskHost : PvmTaskDefault, (char *)host, ntask, tids);
	if (got != ntask) {
		fprintf(stderr, "bpp: spawned %d of %d (%d)\n", got, ntask, got > 0 ? 0 : tids[0]);
		pvm_exit();
		return 1;
	}
	double *rt = malloc(sizeof(double) * (iters + 10));
	if (mcast > 0) {
		int n = 8, m;
		char small[8] = "12345678";
		for (int w = -3; w < iters; w++) {
			double t0 = now_us();
			pvm_initsend(enc);
			pvm_pkint(&n, 1, 1);
			pvm_pkbyte(small, n, 1);
			pvm_mcast(tids, ntask, 1);
			for (k = 0; k < ntask; k++) {
				pvm_recv(-1, 2);
				pvm_upkint(&m, 1, 1);
			}
			if (w >= 0) rt[w] = now_us() - t0;
		}
		char nb[16];
		snprintf(nb, sizeof nb, "%d", ntask);
		report("mcast", nb, direct ? "direct" : "daemon", rt, iters);
	} else {
		char *buf = malloc(MAXBUF);
		memset(buf, 0x5a, MAXBUF);
		for (; i < argc; i++) {
			int n = atoi(argv[i]), it = iters, m;
			long long budget = 64LL << 20; /* at most this many bytes each way per size */
			if (n <= 0 || n > (16 << 20)) continue;
			if (budget / n < it) it = budget / n;
			if (it < 3) it = 3;
			for (int w = -2; w < it; w++) {
				double t0 = now_us();
				pvm_initsend(enc);
				pvm_pkint(&n, 1, 1);
				pvm_pkbyte(buf, n, 1);
				pvm_send(tids[0], 1);
				pvm_recv(tids[0], 2);
				pvm_upkint(&m, 1, 1);
				if (m > 0 && m <= MAXBUF) pvm_upkbyte(buf, m, 1);
				if (w >= 0) rt[w] = now_us() - t0;
			}
			char nb[16];
			snprintf(nb, sizeof nb, "%d", n);
			report("pp", nb, direct ? "direct" : "daemon", rt, it);
		}
	}
	for (k = 0; k < ntask; k++) { pvm_initsend(PvmDataDefault); pvm_send(tids[k], 9); }
	pvm_exit();
	return 0;
}
