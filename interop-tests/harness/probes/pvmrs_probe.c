/* pvmrs_probe: exercises the libpvm calls that the pvm-examples do not (or only with huge
 * messages), so that the legacy daemon's answers can be captured:
 *   direct routes (TC_CONREQ/TC_CONACK + task<->task stream) with XDR, Raw and InPlace (writev)
 *   messages and pvm_psend; pvm_hostsync, pvm_tickle, pvm_tasks/mstat/pstat on a remote host,
 *   pvm_sendsig, notify of task exit / host add / host delete, contexts, TM_SETOPT (self output
 *   and trace redirection), mailbox from a child
 *   (DM_DB when the child is on a slave host), pvm_mcast.
 * usage: pvmrs_probe [HOST]     (the child is spawned on HOST, default: anywhere)
 * Written for pvm-rs (not derived from the PVM sources). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>

#define TAG_PING 1
#define TAG_DONE 9
#define TAG_EXIT 99
#define TAG_HOST 98

static void on_usr1(int s) { (void)s; }

static int child(void) {
  int parent = pvm_parent();
  int data[8];
  char key[64];
  signal(SIGUSR1, on_usr1);
  /* mailbox from the child's host: on a slave host this travels as DM_DB to the master */
  snprintf(key, sizeof key, "pvmrs-probe-%x", pvm_mytid());
  pvm_initsend(PvmDataDefault);
  pvm_pkint(&parent, 1, 1);
  int idx = pvm_putinfo(key, pvm_getsbuf(), PvmMboxDefault);
  int b = pvm_recvinfo(key, idx, PvmMboxDefault);
  if (b >= 0) pvm_freebuf(b);
  pvm_delinfo(key, idx, PvmMboxDefault);
  for (;;) {
    int bufid = pvm_recv(parent, -1);
    int len, tag, src;
    pvm_bufinfo(bufid, &len, &tag, &src);
    if (tag == TAG_DONE) break;
    if (tag == 77) { /* psend/precv */
      continue;
    }
    /* echo the received buffer as is */
    int old = pvm_setsbuf(bufid);
    pvm_send(parent, tag);
    pvm_setsbuf(old);
    pvm_freebuf(bufid);
  }
  /* psend/precv back */
  pvm_precv(parent, 78, data, 8, PVM_INT, NULL, NULL, NULL);
  pvm_psend(parent, 79, data, 8, PVM_INT);
  pvm_exit();
  return 0;
}

static void pingpong(int tid, int enc, const char *what) {
  int ints[16];
  double d[4] = {1.5, -2.25, 3e10, 0.0};
  char s[] = "pvm-rs probe";
  for (int i = 0; i < 16; i++) ints[i] = i * 1000 - 7;
  pvm_initsend(enc);
  pvm_pkint(ints, 16, 1);
  pvm_pkdouble(d, 4, 1);
  pvm_pkstr(s);
  pvm_send(tid, TAG_PING);
  pvm_recv(tid, TAG_PING);
  printf("probe: %s echo ok\n", what);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int me = pvm_mytid();
  if (me < 0) return 1;
  if (pvm_parent() > 0) return child();
  const char *where = argc > 1 ? argv[1] : NULL;
  int nhost, narch, ntask;
  struct pvmhostinfo *hi;
  struct pvmtaskinfo *ti;
  pvm_config(&nhost, &narch, &hi);
  for (int i = 0; i < nhost; i++) {
    struct timeval tv, dt;
    printf("probe: host %s mstat %d\n", hi[i].hi_name, pvm_mstat(hi[i].hi_name));
    pvm_hostsync(hi[i].hi_tid, &tv, &dt);
    pvm_tasks(hi[i].hi_tid, &ntask, &ti);
  }
  {
    int args[1] = {0}, nres = 0, res[10];
    pvm_tickle(1, args, &nres, res);
  }
  /* redirecting one's own output/trace goes to the pvmd as TM_SETOPT; then back to default */
  pvm_setopt(PvmSelfOutputTid, me);
  pvm_setopt(PvmSelfOutputCode, 33);
  pvm_setopt(PvmSelfTraceTid, me);
  pvm_setopt(PvmSelfTraceCode, 34);
  pvm_setopt(PvmSelfTraceTid, 0);
  pvm_setopt(PvmSelfOutputTid, 0);
  int ctx = pvm_newcontext();
  int old = pvm_setcontext(ctx);
  pvm_setcontext(old);
  pvm_freecontext(ctx);

  int hosttids[16], nh = nhost < 16 ? nhost : 16;
  for (int i = 0; i < nh; i++) hosttids[i] = hi[i].hi_tid;
  pvm_notify(PvmHostAdd, TAG_HOST, -1, NULL);
  pvm_notify(PvmHostDelete, TAG_HOST, nh, hosttids);

  int kid;
  if (pvm_spawn(argv[0], NULL, where ? PvmTaskHost : PvmTaskDefault, (char *)where, 1, &kid) != 1) {
    printf("probe: spawn failed %d\n", kid);
    pvm_exit();
    return 1;
  }
  pvm_notify(PvmTaskExit, TAG_EXIT, 1, &kid);
  /* via the daemons first, then a direct route */
  pingpong(kid, PvmDataDefault, "daemon-routed XDR");
  /* the child has installed its SIGUSR1 handler by the time it answers */
  pvm_pstat(kid);
  pvm_sendsig(kid, SIGUSR1);
  pvm_tasks(0, &ntask, &ti);
  pvm_setopt(PvmRoute, PvmRouteDirect);
  pingpong(kid, PvmDataDefault, "direct XDR");
  pingpong(kid, PvmDataRaw, "direct raw");
  pingpong(kid, PvmDataInPlace, "direct in-place");
  pvm_initsend(PvmDataDefault);
  pvm_mcast(&kid, 1, 5); /* multicast to one task */
  pvm_recv(kid, 5);
  pvm_initsend(PvmDataDefault);
  pvm_send(kid, TAG_DONE);
  int v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  pvm_psend(kid, 78, v, 8, PVM_INT);
  pvm_precv(kid, 79, v, 8, PVM_INT, NULL, NULL, NULL);
  pvm_recv(-1, TAG_EXIT);
  printf("probe: child exited, done\n");
  pvm_exit();
  return 0;
}
