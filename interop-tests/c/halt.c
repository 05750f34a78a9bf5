/* Connects, announces its tid, and halts the virtual machine. */
#include <stdio.h>
#include <pvm3.h>

int main(void)
{
	int me = pvm_mytid();
	int cc;

	printf("mytid %x\n", me);
	fflush(stdout);
	cc = pvm_halt();
	printf("halt %d\n", cc);
	return 0;
}
