/* spawnt N: spawns N copies of `idle` in one pvm_spawn call; prints the time until the call
 * returns and until all have said they are up, then releases them and waits until they are gone.
 * idle: enrolls, sends tag 77 to its parent, waits for tag 99. */
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
		pvm_mytid();
		int p = pvm_parent();
		if (p > 0) { pvm_initsend(PvmDataDefault); pvm_send(p, 77); }
		pvm_recv(-1, 99);
		pvm_exit();
		return 0;
	}
	int n = argc > 1 ? atoi(argv[1]) : 100, k, nt;
	int *tids = malloc(sizeof(int) * n);
	char *iargv[] = {"-idle", 0};
	struct pvmtaskinfo *ti;
	if (pvm_mytid() < 0) return 1;
	double t0 = now_ms();
	int cc = pvm_spawn("spawnt", iargv, PvmTaskDefault, "", n, tids);
	double t1 = now_ms();
	for (k = 0; k < cc; k++) pvm_recv(-1, 77);
	double t2 = now_ms();
	for (k = 0; k < cc; k++) { pvm_initsend(PvmDataDefault); pvm_send(tids[k], 99); }
	for (int w = 0; w < 5000; w++) { pvm_tasks(0, &nt, &ti); if (nt <= 1) break; usleep(1000); }
	printf("spawned %d/%d call_ms %.1f all_up_ms %.1f\n", cc, n, t1 - t0, t2 - t0);
	pvm_exit();
	return cc == n ? 0 : 1;
}
