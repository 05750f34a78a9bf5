/* pvmrs_sm: registers as the tasker or the hoster of its pvmd, so that the daemon's SM_
 * messages to them can be captured (written for pvm-rs; not derived from the PVM sources).
 *   pvmrs_sm tasker SECONDS   pvm_reg_tasker (TM_TASKER); for each SM_STTASK from the pvmd,
 *                             fork/exec the task with the given argv/env, and report its exit
 *                             with SM_TASKX.
 *   pvmrs_sm tracer SECONDS   pvm_reg_tracer (TM_TRACER) with a small event mask; prints the
 *                             number of trace messages received, unregisters at the end.
 *   pvmrs_sm hoster SECONDS   pvm_reg_hoster (TM_HOSTER, master only); for each SM_STHOST,
 *                             start the slave pvmds with $PVM_RSH and answer SM_STHOSTACK with
 *                             each slave's first output line, as pvmd' would.
 * Stops after SECONDS without a request. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pvm3.h>
#include <pvmtev.h>

#define SM_STTASK ((int)0x80040011)
#define SM_STHOST ((int)0x8004000f)
#define SM_STHOSTACK ((int)0x80040010)
#define SM_TASKX ((int)0x8004000b)
#define MAXT 64

static int tids[MAXT], pids[MAXT], nt;

static void reap(void) {
  int st;
  struct rusage ru;
  pid_t p;
  while ((p = wait4(-1, &st, WNOHANG, &ru)) > 0) {
    for (int i = 0; i < nt; i++) {
      if (pids[i] != p) continue;
      int v[6] = {tids[i], st, (int)ru.ru_utime.tv_sec, (int)ru.ru_utime.tv_usec, (int)ru.ru_stime.tv_sec,
                  (int)ru.ru_stime.tv_usec};
      pvm_initsend(PvmDataDefault);
      pvm_pkint(v, 6, 1);
      pvm_send(pvm_tidtohost(pvm_mytid()) | (int)0x80000000, SM_TASKX); /* the pvmd: TIDPVMD | host */
      printf("pvmrs_sm: task t%x (pid %d) exited, status %d\n", tids[i], p, st);
      pids[i] = -1;
    }
  }
}

static void sttask(void) {
  int tid, flags, argc, nenv;
  char path[1024], buf[4096];
  pvm_upkint(&tid, 1, 1);
  pvm_upkint(&flags, 1, 1);
  pvm_upkstr(path);
  pvm_upkint(&argc, 1, 1);
  if (argc < 0 || argc > 64) return;
  char *argv[66];
  for (int i = 0; i < argc; i++) {
    pvm_upkstr(buf);
    argv[i] = strdup(buf);
  }
  argv[argc] = NULL;
  pvm_upkint(&nenv, 1, 1);
  if (nenv < 0 || nenv > 256) return;
  char **env = calloc(nenv + 1, sizeof *env);
  for (int i = 0; i < nenv; i++) {
    pvm_upkstr(buf);
    env[i] = strdup(buf);
  }
  printf("pvmrs_sm: SM_STTASK t%x %s argc %d nenv %d\n", tid, path, argc, nenv);
  pid_t p = fork();
  if (p == 0) {
    for (int i = 0; i < nenv; i++) putenv(env[i]);
    execv(path, argv);
    _exit(127);
  }
  if (p > 0 && nt < MAXT) {
    tids[nt] = tid;
    pids[nt++] = p;
  }
}

static void sthost(int bufid) {
  struct pvmminfo mi;
  pvm_getminfo(bufid, &mi);
  int n, wid = mi.wid;
  char sopts[64], login[512], cmd[4096], wcmd[4096], vmid[256];
  const char *rsh = getenv("PVM_RSH");
  pvm_upkint(&n, 1, 1);
  if (n < 0 || n > 64) return;
  int htid[64];
  char result[64][512];
  for (int i = 0; i < n; i++) {
    pvm_upkint(&htid[i], 1, 1);
    pvm_upkstr(sopts);
    pvm_upkstr(login);
    pvm_upkstr(cmd);
    pvm_upkstr(wcmd);
    pvm_upkstr(vmid);
    char line[8192];
    char *host = strchr(login, '@') ? strchr(login, '@') + 1 : login;
    snprintf(line, sizeof line, "%s %s '%s' </dev/null", rsh ? rsh : "rsh", host, cmd);
    printf("pvmrs_sm: SM_STHOST t%x: %s\n", htid[i], line);
    strcpy(result[i], "PvmCantStart");
    FILE *f = popen(line, "r");
    if (f) {
      if (fgets(result[i], sizeof result[i], f)) result[i][strcspn(result[i], "\n")] = 0;
      /* the slave keeps running; its stdout stays open, so do not wait for EOF */
    }
  }
  pvm_initsend(PvmDataDefault);
  for (int i = 0; i < n; i++) {
    pvm_pkint(&htid[i], 1, 1);
    pvm_pkstr(result[i]);
  }
  int sb = pvm_getsbuf();
  pvm_getminfo(sb, &mi);
  mi.wid = wid;
  pvm_setminfo(sb, &mi);
  pvm_send(pvm_tidtohost(pvm_mytid()) | (int)0x80000000, SM_STHOSTACK);
  printf("pvmrs_sm: SM_STHOSTACK sent (wid %d)\n", wid);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) return 2;
  int secs = argc > 2 ? atoi(argv[2]) : 10;
  if (pvm_mytid() < 0) return 1;
  int hoster = strcmp(argv[1], "hoster") == 0;
  int tracer = strcmp(argv[1], "tracer") == 0;
  Pvmtmask mask;
  TEV_MASK_INIT(mask);
  TEV_MASK_SET(mask, TEV_SEND);
  TEV_MASK_SET(mask, TEV_RECV);
  int cc = hoster   ? pvm_reg_hoster()
           : tracer ? pvm_reg_tracer(0, 71, 0, 72, mask, 0, PvmTraceFull)
                    : pvm_reg_tasker();
  /* like srm.pvm: reserved tids/tags, so that SM_ messages can be sent to the pvmd */
  pvm_setopt(PvmResvTids, 1);
  printf("pvmrs_sm: registered as %s: %d\n", argv[1], cc);
  int ntrace = 0;
  for (;;) {
    struct timeval tv = {1, 0};
    int idle = 0, b = 0;
    while ((b = pvm_trecv(-1, -1, &tv)) == 0) {
      reap();
      if (++idle >= secs) break;
    }
    if (b <= 0) break;
    int len, tag, src;
    pvm_bufinfo(b, &len, &tag, &src);
    if (tag == 71 || tag == 72) ntrace++;
    else if (tag == SM_STTASK) sttask();
    else if (tag == SM_STHOST) sthost(b);
    else {
      struct pvmminfo mi;
      pvm_getminfo(b, &mi);
      printf("pvmrs_sm: message tag %#x ctx %#x from t%x\n", tag, mi.ctx, src);
    }
    reap();
  }
  if (tracer) {
    printf("pvmrs_sm: %d trace/output messages\n", ntrace);
    pvm_reg_tracer(0, 71, 0, 72, mask, 0, PvmTraceFull); /* second call unregisters */
  }
  printf("pvmrs_sm: idle, exiting\n");
  pvm_exit();
  return 0;
}
