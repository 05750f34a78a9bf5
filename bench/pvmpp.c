/* pvmpp: ping-pong through the daemon (or direct), for ci/bench-daemon.
 * usage: pvmpp [-d] [-e raw|def|inplace] [-n iters] size...
 * The echo task is this same program spawned with -slave (found through the daemon's exec path).
 * Prints one line per size: size route enc iters min_us med_us max_us MB/s(2*size/median). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#include "timing.h"

static int parse_enc(const char *s)
{
	if (!strcmp(s, "def")) return PvmDataDefault;
	if (!strcmp(s, "inplace")) return PvmDataInPlace;
	return PvmDataRaw;
}

static void echo_loop(int enc)
{
	char *buf = malloc(17 << 20);
	for (;;) {
		int bid = pvm_recv(-1, -1), len, tag, src, n;
		/* An error (the pvmd is gone) would come back at once for ever: stop, not spin. */
		if (bid < 0) break;
		pvm_bufinfo(bid, &len, &tag, &src);
		if (tag == 9) break;
		pvm_upkint(&n, 1, 1);
		if (n) pvm_upkbyte(buf, n, 1);
		pvm_initsend(enc);
		pvm_pkint(&n, 1, 1);
		if (n) pvm_pkbyte(buf, n, 1);
		pvm_send(src, 2);
	}
}

int main(int argc, char **argv)
{
	int direct = 0, enc = PvmDataRaw, iters = 200, slave = 0, i;
	const char *encname = "raw";
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-slave")) slave = 1;
		else if (!strcmp(argv[i], "-d")) direct = 1;
		else if (!strcmp(argv[i], "-e") && i + 1 < argc) { encname = argv[++i]; enc = parse_enc(encname); }
		else if (!strcmp(argv[i], "-n") && i + 1 < argc) iters = atoi(argv[++i]);
	}
	if (pvm_mytid() < 0) { fprintf(stderr, "pvm_mytid failed\n"); return 1; }
	if (direct) pvm_setopt(PvmRoute, PvmRouteDirect);
	if (slave) { echo_loop(enc); pvm_exit(); return 0; }

	char *sargv[6];
	int k = 0, stid;
	sargv[k++] = "-slave";
	if (direct) sargv[k++] = "-d";
	sargv[k++] = "-e";
	sargv[k++] = (char *)encname;
	sargv[k] = 0;
	if (pvm_spawn("pvmpp", sargv, PvmTaskDefault, "", 1, &stid) != 1) {
		fprintf(stderr, "spawn failed %d\n", stid);
		pvm_exit();
		return 1;
	}
	char *buf = malloc(17 << 20);
	memset(buf, 0x5a, 17 << 20);
	double *rt = malloc(sizeof(double) * (iters + 10));
	for (; i < argc; i++) {
		int n = atoi(argv[i]), it = iters;
		long long budget = 256LL << 20;
		if (n > 0 && budget / n < it) it = budget / n;
		if (it < 5) it = 5;
		for (int w = -3; w < it; w++) {
			double t0 = now_us();
			int m;
			pvm_initsend(enc);
			pvm_pkint(&n, 1, 1);
			if (n) pvm_pkbyte(buf, n, 1);
			pvm_send(stid, 1);
			pvm_recv(stid, 2);
			pvm_upkint(&m, 1, 1);
			if (m) pvm_upkbyte(buf, m, 1);
			if (w >= 0) rt[w] = now_us() - t0;
		}
		qsort(rt, it, sizeof(double), cmp_double);
		double med = rt[it / 2];
		printf("%d %s %s %d %.1f %.1f %.1f %.2f\n", n, direct ? "direct" : "daemon", encname, it, rt[0], med,
		       rt[it - 1], med > 0 ? 2.0 * n / med : 0);
		fflush(stdout);
	}
	pvm_initsend(PvmDataDefault);
	pvm_send(stid, 9);
	pvm_exit();
	return 0;
}
