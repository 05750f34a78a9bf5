/* The console's `reset` across hosts (multi_reset test).
 *   reset_probe start HOST...  spawns `reset_probe put` on each HOST, waits until each says it
 *                              has put its entries, prints "started N", exits (they live on)
 *   reset_probe put            puts a persistent entry "pf-pers" and a plain one "pf-plain-<tid>",
 *                              tells its parent, then waits (until killed)
 *   reset_probe gone           puts a persistent entry "pf-left" and exits at once
 *   reset_probe list           prints "tasks N" (all tasks of the machine, itself included) and
 *                              one "mbox CLASS ENTRIES" line per mailbox class starting "pf-" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pvm3.h>

static int put(const char *class, int flags)
{
	int v = 42;
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&v, 1, 1);
	return pvm_putinfo((char *)class, pvm_getsbuf(), flags);
}

int main(int argc, char **argv)
{
	int me, i, n, cc, nt;
	char name[64];
	struct pvmtaskinfo *ti;
	struct pvmmboxinfo *classes;

	pvm_setopt(PvmAutoErr, 0);
	me = pvm_mytid();
	if (me < 0) {
		printf("mytid %d\n", me);
		return 1;
	}
	if (argc > 1 && strcmp(argv[1], "put") == 0) {
		int p = pvm_parent();
		snprintf(name, sizeof name, "pf-plain-%x", me);
		int a = put("pf-pers", PvmMboxPersistent | PvmMboxMultiInstance);
		int b = put(name, PvmMboxDefault);
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&a, 1, 1);
		pvm_pkint(&b, 1, 1);
		pvm_send(p, 1);
		pvm_recv(-1, 999);
		pvm_exit();
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "gone") == 0) {
		cc = put("pf-left", PvmMboxPersistent);
		printf("left %d\n", cc);
		pvm_exit();
		return cc < 0;
	}
	if (argc > 1 && strcmp(argv[1], "start") == 0) {
		char *av[] = {"put", 0};
		int ok = 0, tid, a, b;
		for (i = 2; i < argc; i++) {
			cc = pvm_spawn("reset_probe", av, PvmTaskHost, argv[i], 1, &tid);
			if (cc != 1) {
				printf("spawn on %s: %d\n", argv[i], tid);
				continue;
			}
			pvm_recv(tid, 1);
			pvm_upkint(&a, 1, 1);
			pvm_upkint(&b, 1, 1);
			if (a >= 0 && b >= 0)
				ok++;
			else
				printf("put on %s: %d %d\n", argv[i], a, b);
		}
		printf("started %d\n", ok);
		pvm_exit();
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "list") == 0) {
		if (pvm_tasks(0, &nt, &ti) < 0)
			nt = -1;
		printf("tasks %d\n", nt);
		cc = pvm_getmboxinfo("pf-*", &n, &classes);
		if (cc < 0)
			printf("getmboxinfo %d\n", cc);
		else
			for (i = 0; i < n; i++)
				if (strncmp(classes[i].mi_name, "pf-", 3) == 0)
					printf("mbox %s %d\n", classes[i].mi_name, classes[i].mi_nentries);
		pvm_exit();
		return 0;
	}
	printf("usage: reset_probe start HOST... | put | gone | list\n");
	pvm_exit();
	return 2;
}
