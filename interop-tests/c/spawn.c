/* Spawning through the pvmd.
 *   spawn            the parent: spawns 3 copies of itself as children, collects their output
 *                    with pvm_catchout, their replies and their exit notifications
 *   spawn child      reports to its parent and prints a line */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>

#define N 3

int main(int argc, char **argv)
{
	int me, i, j, n, tids[N], v, src, len, tag, got[N], nt, hellos = 0, siblings;
	struct pvmtaskinfo *ti;
	FILE *cap;
	char line[256];

	pvm_setopt(PvmAutoErr, 0);
	me = pvm_mytid();
	if (argc > 1) {
		int p = pvm_parent();
		printf("hello from a child\n");
		fflush(stdout);
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&me, 1, 1);
		{ int *sib; siblings = pvm_siblings(&sib); }
		pvm_pkint(&siblings, 1, 1);
		pvm_send(p, 1);
		pvm_recv(p, 2);		/* stay listed until the parent has looked */
		pvm_exit();
		return 0;
	}
	printf("mytid %x\n", me);
	cap = tmpfile();
	pvm_catchout(cap);
	n = pvm_spawn(argv[0], (char **)(char *[]){"child", 0}, PvmTaskDefault, "", N, tids);
	printf("spawn %d", n);
	for (i = 0; i < N; i++)
		printf(" %x", tids[i] - me);
	printf("\n");
	printf("notify %d\n", pvm_notify(PvmTaskExit, 99, N, tids));

	pvm_tasks(0, &nt, &ti);
	for (i = 0, j = 0; i < nt; i++)
		if (ti[i].ti_ptid == me)
			j++;
	printf("children listed %d\n", j);
	for (i = 0; i < N; i++) {
		pvm_recv(-1, 1);
		pvm_upkint(&v, 1, 1);
		pvm_upkint(&siblings, 1, 1);
		pvm_bufinfo(pvm_getrbuf(), &len, &tag, &src);
		got[i] = v == src;
		printf("child says it is its sender %d, siblings %d\n", got[i], siblings);
	}
	pvm_initsend(PvmDataDefault);
	printf("release %d\n", pvm_mcast(tids, N, 2));
	for (i = 0; i < N; i++) {
		pvm_recv(-1, 99);
		pvm_upkint(&v, 1, 1);
		for (j = 0; j < N; j++)
			if (v == tids[j])
				tids[j] = 0;
	}
	for (i = 0, j = 0; i < N; i++)
		j += tids[i] == 0;
	printf("exit notifications %d\n", j);
	n = pvm_spawn("no-such-program-anywhere", 0, PvmTaskDefault, "", 1, tids);
	printf("spawn missing %d %d\n", n, tids[0]);
	n = pvm_spawn(argv[0], 0, PvmTaskHost, "no.such.host", 1, tids);
	printf("spawn bad host %d %d\n", n, tids[0]);
	pvm_catchout(0);
	pvm_exit();
	rewind(cap);
	while (fgets(line, sizeof line, cap))
		if (strstr(line, "hello from a child"))
			hellos++;
	printf("caught hellos %d\n", hellos);
	return 0;
}
