/* Cross-host checks for the multi-host tests.
 *   multi_probe HOST    the parent: spawns a child on HOST, exchanges messages both ways
 *                       (direct and multicast), shares a mailbox entry, looks at the task
 *                       list, pstat and notify, and prints one "ok <what>" line per check
 *   multi_probe -c      the child: echoes, reads the mailbox, prints a line, exits */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pvm3.h>

int main(int argc, char **argv)
{
	int me, child, v, n, i, nh, na, nt, found = 0, bufid, tag = 0, src = 0, len;
	struct pvmhostinfo *hi;
	struct pvmtaskinfo *ti;

	pvm_setopt(PvmAutoErr, 0);
	me = pvm_mytid();
	if (argc > 1 && strcmp(argv[1], "-c") == 0) {
		int p = pvm_parent();
		char host[256];
		gethostname(host, sizeof host);
		printf("child output line from t%x\n", me);
		fflush(stdout);
		pvm_recv(p, 1);
		pvm_upkint(&v, 1, 1);
		v += 1;
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&v, 1, 1);
		pvm_send(p, 2);
		pvm_recv(p, 3);		/* multicast */
		pvm_upkint(&v, 1, 1);
		bufid = pvm_recvinfo("multi-probe", 0, PvmMboxDefault);
		if (bufid > 0) {
			pvm_setrbuf(bufid);
			pvm_upkint(&n, 1, 1);
		} else
			n = bufid;
		pvm_initsend(PvmDataDefault);
		v = v * 1000 + n;
		pvm_pkint(&v, 1, 1);
		pvm_send(p, 4);
		pvm_recv(p, 5);		/* stay until the parent has looked */
		pvm_exit();
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: multi_probe HOST\n");
		return 2;
	}
	if (me < 0) {
		printf("no pvmd %d\n", me);
		return 1;
	}
	pvm_config(&nh, &na, &hi);
	printf("ok hosts %d\n", nh);
	n = pvm_spawn(argv[0], (char *[]){"-c", 0}, PvmTaskHost, argv[1], 1, &child);
	if (n != 1) {
		printf("spawn failed %d %d\n", n, child);
		return 1;
	}
	printf("ok spawn host %x\n", pvm_tidtohost(child));
	printf("ok notify %d\n", pvm_notify(PvmTaskExit, 99, 1, &child));
	v = 41;
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&v, 1, 1);
	pvm_send(child, 1);
	pvm_recv(child, 2);
	pvm_upkint(&v, 1, 1);
	printf("ok echo %d\n", v);

	v = 7;
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&v, 1, 1);
	pvm_putinfo("multi-probe", pvm_getsbuf(), PvmMboxDefault);
	pvm_initsend(PvmDataDefault);
	v = 5;
	pvm_pkint(&v, 1, 1);
	pvm_mcast(&child, 1, 3);
	pvm_recv(child, 4);
	pvm_upkint(&v, 1, 1);
	printf("ok mcast+mbox %d\n", v);

	printf("ok pstat %d\n", pvm_pstat(child));
	pvm_tasks(0, &nt, &ti);
	for (i = 0; i < nt; i++)
		if (ti[i].ti_tid == child && ti[i].ti_ptid == me)
			found = 1;
	printf("ok tasks listed %d\n", found);

	pvm_initsend(PvmDataDefault);
	pvm_send(child, 5);
	bufid = pvm_recv(-1, 99);
	pvm_bufinfo(bufid, &len, &tag, &src);
	pvm_upkint(&v, 1, 1);
	printf("ok exit notify %d\n", v == child);
	printf("ok pstat after exit %d\n", pvm_pstat(child));
	pvm_exit();
	return 0;
}
