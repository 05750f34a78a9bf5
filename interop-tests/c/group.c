/* Multicast, task-exit notification and signals through the pvmd.
 *   group member    prints "tid <hex>", answers one multicast (tag 5) with tag 6, exits
 *   group sleeper   prints "tid <hex>", waits for a message that never comes
 *   group lead <m1> <m2> <sleeper>
 *                   notify on all three, multicast to the members, signal the sleeper,
 *                   prints what came back */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <pvm3.h>

int main(int argc, char **argv)
{
	int me, i, v, tids[3], got[3], n, src, len, tag, cc;

	me = pvm_mytid();
	if (me < 0)
		return 1;
	if (!strcmp(argv[1], "member") || !strcmp(argv[1], "sleeper")) {
		printf("tid %x\n", me);
		fflush(stdout);
		if (!strcmp(argv[1], "sleeper")) {
			pvm_recv(-1, 77);
			return 3;
		}
		pvm_recv(-1, 5);
		pvm_upkint(&v, 1, 1);
		pvm_bufinfo(pvm_getrbuf(), &len, &tag, &src);
		pvm_initsend(PvmDataDefault);
		v += 1;
		pvm_pkint(&v, 1, 1);
		pvm_send(src, 6);
		printf("member got %d\n", v - 1);
		pvm_exit();
		return 0;
	}
	for (i = 0; i < 3; i++)
		tids[i] = (int)strtol(argv[2 + i], 0, 16);
	cc = pvm_notify(PvmTaskExit, 99, 3, tids);
	printf("notify %d\n", cc);
	pvm_initsend(PvmDataDefault);
	v = 42;
	pvm_pkint(&v, 1, 1);
	printf("mcast %d\n", pvm_mcast(tids, 2, 5));
	for (i = 0; i < 2; i++) {
		pvm_recv(-1, 6);
		pvm_upkint(&v, 1, 1);
		pvm_bufinfo(pvm_getrbuf(), &len, &tag, &src);
		printf("reply %d from member %d\n", v, src == tids[0] || src == tids[1]);
	}
	printf("sendsig %d\n", pvm_sendsig(tids[2], SIGTERM));
	for (n = 0; n < 3; n++) {
		pvm_recv(-1, 99);
		pvm_upkint(&got[n], 1, 1);
	}
	for (i = 0, v = 0; i < 3; i++)
		for (n = 0; n < 3; n++)
			v += got[n] == tids[i];
	printf("exit notifies for all three %d\n", v == 3);
	printf("pstat of sleeper %d\n", pvm_pstat(tids[2]));
	pvm_exit();
	return 0;
}
