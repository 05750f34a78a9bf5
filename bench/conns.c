/* conns N: forks N processes that each connect to the daemon (pvm_mytid) and then wait; prints
 * "ready" when all are connected, holds them until stdin closes, then lets them exit. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
#include <pvm3.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000, k, up = 0;
	int p[2], q[2];
	if (pipe(p) || pipe(q)) return 1;
	pid_t *pids = calloc(n, sizeof(pid_t));
	for (k = 0; k < n; k++) {
		pid_t c = fork();
		if (c == 0) {
			char b = pvm_mytid() > 0 ? 'y' : 'n';
			write(p[1], &b, 1);
			read(q[0], &b, 1); /* EOF when the parent lets go */
			pvm_exit();
			_exit(0);
		}
		pids[k] = c;
	}
	close(p[1]);
	close(q[0]);
	for (k = 0; k < n; k++) {
		char b;
		if (read(p[0], &b, 1) == 1 && b == 'y') up++;
	}
	printf("ready %d\n", up);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {}
	close(q[1]);
	for (k = 0; k < n; k++) waitpid(pids[k], 0, 0);
	return up == n ? 0 : 1;
}
