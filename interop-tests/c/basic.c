/* Queries a pvmd the way simple PVM programs do and prints what it learns, one fact a line,
 * without pids or times, so runs against two daemons can be compared line by line. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>
#include <pvm3.h>

int main(void)
{
	int me, nh, na, nt, i, cc, ctx, bufid, v;
	struct pvmhostinfo *hi;
	struct pvmtaskinfo *ti;

	pvm_setopt(PvmAutoErr, 0);
	me = pvm_mytid();
	printf("mytid %x\n", me);
	if (me < 0)
		return 1;
	cc = pvm_config(&nh, &na, &hi);
	printf("config %d nhost %d narch %d\n", cc, nh, na);
	for (i = 0; i < nh; i++)
		printf("host %x %s %s %d %x\n", hi[i].hi_tid, hi[i].hi_name, hi[i].hi_arch,
			hi[i].hi_speed, hi[i].hi_dsig);
	cc = pvm_tasks(0, &nt, &ti);
	printf("tasks %d n %d\n", cc, nt);
	for (i = 0; i < nt; i++)
		printf("task %x ptid %x host %x flag %d aout '%s' pid_is_mine %d\n", ti[i].ti_tid,
			ti[i].ti_ptid, ti[i].ti_host, ti[i].ti_flag, ti[i].ti_a_out,
			ti[i].ti_pid == (int)getpid());
	cc = pvm_tasks(me, &nt, &ti);
	printf("tasks-me %d n %d\n", cc, nt);
	printf("mstat %d\n", pvm_mstat(nh ? hi[0].hi_name : "x"));
	printf("mstat-bad %d\n", pvm_mstat("no.such.host.invalid"));
	printf("pstat %d\n", pvm_pstat(me));
	printf("pstat-bad %d\n", pvm_pstat(me + 5));
	printf("parent %d\n", pvm_parent());
	ctx = pvm_newcontext();
	printf("ctx %x\n", ctx);
	printf("freectx %d\n", pvm_freecontext(ctx));
	printf("freectx-again %d\n", pvm_freecontext(ctx));
	{
		struct timeval tv;
		printf("hostsync %d\n", pvm_hostsync(nh ? hi[0].hi_tid : 0, &tv, (struct timeval *)0));
	}
	printf("recvinfo-none %d\n", pvm_recvinfo("no such class", 0, PvmMboxDefault));
	bufid = pvm_initsend(PvmDataDefault);
	v = 12345;
	pvm_pkint(&v, 1, 1);
	printf("putinfo %d\n", pvm_putinfo("interop", bufid, PvmMboxDefault));
	printf("putinfo-again %d\n", pvm_putinfo("interop", bufid, PvmMboxMultiInstance));
	bufid = pvm_recvinfo("interop", 1, PvmMboxDefault);
	v = 0;
	if (bufid > 0) {
		pvm_setrbuf(bufid);
		pvm_upkint(&v, 1, 1);
	}
	printf("recvinfo %d value %d\n", bufid > 0, v);
	{
		int nclasses = 0;
		struct pvmmboxinfo *classes;
		cc = pvm_getmboxinfo("interop", &nclasses, &classes);
		printf("mboxinfo %d n %d", cc, nclasses);
		for (i = 0; i < nclasses; i++)
			printf(" %s:%d", classes[i].mi_name, classes[i].mi_nentries);
		printf("\n");
	}
	printf("delinfo %d\n", pvm_delinfo("interop", 0, PvmMboxDefault));
	printf("delinfo-again %d\n", pvm_delinfo("interop", 0, PvmMboxDefault));
	printf("exit %d\n", pvm_exit());
	return 0;
}
