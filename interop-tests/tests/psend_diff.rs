//! pvm_psend/pvm_precv against the legacy library: every data type, counts below, equal to
//! and above what was sent, a type other than the one sent, wildcards, and the values, source,
//! tag and length precv reports. Our library on the legacy pvmd and the legacy library on
//! pvmd-rs must print what all-legacy prints.

use interop_tests::shim::{same_as_all_legacy, Lib};
use interop_tests::Kind;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>
extern int pvm_errno;
int main(void)
{
    static const int types[] = { PVM_BYTE, PVM_SHORT, PVM_INT, PVM_FLOAT, PVM_CPLX, PVM_DOUBLE,
                                 PVM_DCPLX, PVM_LONG, PVM_USHORT, PVM_UINT, PVM_ULONG };
    unsigned char src[128], dst[160];
    int me = pvm_mytid(), t, i, k, rc, rtid, rtag, rlen;
    for (i = 0; i < 128; i++) src[i] = (unsigned char)(i * 29 + 3);
    printf("enrolled %d\n", me > 0);
    for (t = 0; t < 11; t++) {
        for (k = 0; k < 4; k++) {
            int sent = 4, want = k == 0 ? 2 : k == 1 ? 4 : k == 2 ? 6 : 4;
            int rtype = k == 3 ? types[(t + 1) % 11] : types[t];
            rc = pvm_psend(me, 10 + t, src, sent, types[t]);
            memset(dst, 0xee, sizeof dst);
            rtid = rtag = rlen = -99;
            rc = pvm_precv(k == 2 ? -1 : me, k == 1 ? -1 : 10 + t, dst, want, rtype, &rtid, &rtag, &rlen);
            printf("type %d case %d: precv %d errno %d from %s tag %d len %d:", types[t], k, rc, pvm_errno,
                   rtid == me ? "me" : "?", rtag, rlen);
            for (i = 0; i < 64; i++) printf("%s%02x", i % 8 ? "" : " ", dst[i]);
            printf("\n");
        }
    }
    rc = pvm_psend(me, 99, src, 3, 12345);
    printf("bad type send %d errno %d\n", rc, pvm_errno);
    rc = pvm_psend(me, 98, src, -1, PVM_INT);
    printf("negative count send %d errno %d\n", rc, pvm_errno);
    {
        struct timeval tv = { 2, 0 };
        int b = pvm_trecv(me, 98, &tv), len = -1;
        if (b > 0) pvm_bufinfo(b, &len, &rtag, &rtid);
        printf("what it sent: %d len %d\n", b > 0, len);
    }
    pvm_exit();
    printf("done\n");
    return 0;
}
"#;

#[test]
fn psend_precv_same_as_legacy() {
    same_as_all_legacy(
        &interop_tests::build_c("psend-diff", PROGRAM, &["-w"]),
        &[],
        &[(Kind::Legacy, Lib::Shim), (Kind::Ours, Lib::Legacy)],
        &["type 2 case 1: precv 0"],
    );
}
