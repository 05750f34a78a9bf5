/* Starts a pvmd the way the legacy library does ($PVM_ROOT/lib/pvmd, address line on a pipe),
 * then talks to it. */
#include <stdio.h>
#include <pvm3.h>

int main(void)
{
	int cc, me, nh, na;
	struct pvmhostinfo *hi;

	pvm_setopt(PvmAutoErr, 0);
	cc = pvm_start_pvmd(0, (char **)0, 0);
	printf("start %d\n", cc);
	me = pvm_mytid();
	printf("mytid %x\n", me);
	cc = pvm_config(&nh, &na, &hi);
	printf("config %d nhost %d\n", cc, nh);
	printf("exit %d\n", pvm_exit());
	return 0;
}
