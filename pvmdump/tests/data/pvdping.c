/* pvdping: traffic generator for pvmdump's end-to-end capture.
 * Parent (no PVM parent): spawns itself on host h2, sends a 6000-byte XDR message through the
 * pvmds (4 KB datagrams, IP-fragmented on the 1500-byte veth), waits for the reply, then
 * switches to PvmRouteDirect and does the same over the task-to-task TCP route.
 * Child: echoes every message back with tag+1, until tag 99. */
#include <stdio.h>
#include <string.h>
#include <pvm3.h>

#define N 6000

int main(int argc, char **argv)
{
    static char buf[N];
    int me = pvm_mytid(), parent = pvm_parent(), child, i, tag, len, bid;
    if (me < 0)
        return 1;
    if (parent == PvmNoParent) {
        if (pvm_spawn(argv[0], NULL, PvmTaskHost, "h2", 1, &child) != 1) {
            printf("spawn failed %d\n", child);
            pvm_exit();
            return 1;
        }
        for (i = 0; i < N; i++)
            buf[i] = (char)(i * 7);
        for (tag = 1; tag <= 3; tag += 2) {
            if (tag == 3)
                pvm_setopt(PvmRoute, PvmRouteDirect);
            pvm_initsend(PvmDataDefault);
            pvm_pkint(&tag, 1, 1);
            pvm_pkbyte(buf, N, 1);
            pvm_pkstr("hello from the parent");
            pvm_send(child, tag);
            bid = pvm_recv(child, tag + 1);
            pvm_bufinfo(bid, &len, NULL, NULL);
            printf("reply tag %d: %d bytes\n", tag + 1, len);
        }
        pvm_initsend(PvmDataDefault);
        pvm_send(child, 99);
    } else {
        pvm_setopt(PvmRoute, PvmRouteDirect);
        for (;;) {
            bid = pvm_recv(parent, -1);
            pvm_bufinfo(bid, &len, &tag, NULL);
            if (tag == 99)
                break;
            pvm_upkint(&i, 1, 1);
            pvm_upkbyte(buf, N, 1);
            pvm_initsend(PvmDataRaw);
            pvm_pkint(&i, 1, 1);
            pvm_pkstr("echo");
            pvm_pkbyte(buf, 5000, 1);
            pvm_send(parent, tag + 1);
        }
    }
    pvm_exit();
    return 0;
}
