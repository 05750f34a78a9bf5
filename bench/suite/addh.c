/* addh HOST...: one pvm_addhosts call for all HOSTs; prints "addhosts N OK MS". */
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <pvm3.h>

int main(int argc, char **argv)
{
	int n = argc - 1, ok = 0, k;
	struct timeval a, b;
	if (n < 1 || pvm_mytid() < 0) return 1;
	int *infos = calloc(n, sizeof(int));
	gettimeofday(&a, 0);
	pvm_addhosts(argv + 1, n, infos);
	gettimeofday(&b, 0);
	for (k = 0; k < n; k++) if (infos[k] > 0) ok++;
	printf("addhosts %d %d %.1f\n", n, ok, (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_usec - a.tv_usec) / 1e3);
	pvm_exit();
	return ok == n ? 0 : 1;
}
