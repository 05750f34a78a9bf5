/* holdn N: N forked processes each enrol (pvm_mytid) and stay connected; prints "ready UP" once
 * all have answered, keeps them until stdin reaches EOF, then lets them exit and reaps them. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include <pvm3.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000, k, up = 0, up_pipe[2], go_pipe[2];
	char c;
	if (n < 1 || pipe(up_pipe) || pipe(go_pipe)) return 1;
	pid_t *kids = calloc(n, sizeof(pid_t));
	for (k = 0; k < n; k++) {
		pid_t p = fork();
		if (p == 0) {
			close(go_pipe[1]);
			c = pvm_mytid() > 0 ? 'y' : 'n';
			if (write(up_pipe[1], &c, 1) != 1) _exit(1);
			while (read(go_pipe[0], &c, 1) > 0) {}
			pvm_exit();
			_exit(0);
		}
		kids[k] = p;
	}
	close(up_pipe[1]);
	close(go_pipe[0]);
	for (k = 0; k < n; k++)
		if (read(up_pipe[0], &c, 1) == 1 && c == 'y') up++;
	printf("ready %d\n", up);
	fflush(stdout);
	while (read(0, &c, 1) > 0) {}
	close(go_pipe[1]);
	for (k = 0; k < n; k++) if (kids[k] > 0) waitpid(kids[k], 0, 0);
	return up == n ? 0 : 1;
}
