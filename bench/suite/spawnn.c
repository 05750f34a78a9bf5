/* spawnn N: one pvm_spawn of N copies of itself (-idle); prints "spawn N GOT CALL_MS ALL_UP_MS"
 * (until the call returns, until every child has reported in), then releases the children and
 * waits (bounded) until the daemon lists only this task. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>
#include <pvm3.h>

static double now_ms(void)
{
	struct timeval t;
	gettimeofday(&t, 0);
	return t.tv_sec * 1e3 + t.tv_usec / 1e3;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "-idle")) {
		int p;
		pvm_mytid();
		if ((p = pvm_parent()) > 0) { pvm_initsend(PvmDataDefault); pvm_send(p, 77); }
		pvm_recv(-1, 99);
		pvm_exit();
		return 0;
	}
	int n = argc > 1 ? atoi(argv[1]) : 100, k, nt, got;
	if (n < 1) n = 1;
	int *tids = calloc(n, sizeof(int));
	char *iargv[] = {"-idle", 0};
	struct pvmtaskinfo *ti;
	if (pvm_mytid() < 0) return 1;
	double t0 = now_ms();
	got = pvm_spawn("spawnn", iargv, PvmTaskDefault, "", n, tids);
	double t1 = now_ms();
	for (k = 0; k < got; k++) pvm_recv(-1, 77);
	double t2 = now_ms();
	for (k = 0; k < got; k++) { pvm_initsend(PvmDataDefault); pvm_send(tids[k], 99); }
	for (k = 0; k < 5000; k++) { if (pvm_tasks(0, &nt, &ti) < 0 || nt <= 1) break; usleep(1000); }
	printf("spawn %d %d %.1f %.1f\n", n, got, t1 - t0, t2 - t0);
	pvm_exit();
	return got == n ? 0 : 1;
}
