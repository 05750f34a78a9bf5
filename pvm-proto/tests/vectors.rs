//! Every captured frame parses at every layer and re-emits to the same bytes (masked bytes
//! aside), and decoded fields match what the spec and the capture notes say.

use pvm_proto::body::{self, Body, DbReply, GsStaticAck, OutputKind, TidsOrError};
use pvm_proto::codes::{DbOp, Dm, Tm, ENC_XDR, SYSCTX_TC, SYSCTX_TM, TDPROTOCOL};
use pvm_proto::frag::{DatagramHeader, FragFlags, StreamFragHeader};
use pvm_proto::hexvec;
use pvm_proto::mesg::{MsgHeader, UNINITIALISED};
use pvm_proto::message::{Message, Reassembler};
use pvm_proto::Tid;
use std::path::PathBuf;

struct Captured {
    file: String,
    label: String,
    msg: Message,
    /// The message header as captured (garbage bytes included).
    raw_header: Vec<u8>,
    body: Body,
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Frames captured for this module from the installed legacy PVM (see the `#` line): message
/// shapes the shared vectors do not cover. Kept here rather than in `tests/vectors/`, which
/// mirrors the shared capture set.
const EXTRA_NAME: &str = "td_extra_capture (embedded)";
const EXTRA: &str = r#"
# captured 2026-11-26 (strace of one task against pvmd 3.4.6, PVM_TMP private): pvm_catchout output records (TC_OUTPUT), pvm_sendsig/pvm_kill, notify, addhosts/delhosts/mstat failures, tickle, PvmHostAdd/PvmHostDelete notify requests, group server (join, gsize, getinst, gettid, barrier, freezegroup, leave), pvm_reg_rm (TM_SCHED), pvm_halt; the task's TM_DB GET polls for the pvmgs registration are left out
## task->pvmd ffffffff->80000000 tag 80010001 ctx 7fffe (88 bytes)
80000000ffffffff000000480300000010000000800100010007fffe00000000
00000001000000000000000000000000000005260000001f2f746d702f70766d
6361702f746d702f70766d746d703032353139302e300000
## task->pvmd ffffffff->80000000 tag 80010002 ctx 7fffe (56 bytes)
80000000ffffffff000000280300000010000000800100020007fffe00000000
000000020000000000000000000000000000626600000000
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (88 bytes)
8000000000040001000000480300000010000000800100100007fffe00000000
000000030000000000000000000000000000000300040001000000132323235f
50564d5f5452414345525f23232300320000000000000000
## task->pvmd 00040001->80000000 tag 8001000f ctx 0 (68 bytes)
80000000000400010000003403000000100000008001000f0000000000000000
00000000000000000000000000000000000000010007ffff8003000b00000001
00040001
## task->pvmd 00040001->80000000 tag 8001000a ctx 7fffe (236 bytes)
8000000000040001000000dc03000000100000008001000a0007fffe00000000
00000004000000000000000000000000000000152f746d702f70766d6361702f
62696e2f63617074000000000000000000000001000000000000000100000001
000000066368696c64000000000400010007ffff800300050000000000000000
00000000000000040000002d50564d544d41534b3d4040404040404040404040
404040404040404040404040404040404040404040404040000000000000000c
50564d5452434255463d30000000000c50564d5452434f50543d30000000000b
50564d4354583d3078300000
## task->pvmd 00040001->80000000 tag 8001000e ctx 0 (56 bytes)
80000000000400010000002803000000100000008001000e0000000000000000
000000000000000000000000000000000000000100040002
## task->pvmd 00040001->40040001 tag 8003000c ctx 7ffff (56 bytes)
40040001000400010000002803000000100000008003000c0007ffff00000000
000000000000000000000000000000000000000100040002
## task->pvmd 00040001->80000000 tag 8001000f ctx 0 (68 bytes)
80000000000400010000003403000000100000008001000f0000000000000000
0000000000000000000000000000000000000001000000000000004d00000001
00040002
## task->pvmd 00040001->80000000 tag 8001000c ctx 7fffe (56 bytes)
80000000000400010000002803000000100000008001000c0007fffe00000000
000000050000000000000000000000000004000200000000
## task->pvmd 00040001->80000000 tag 8001000c ctx 7fffe (56 bytes)
80000000000400010000002803000000100000008001000c0007fffe00000000
00000006000000000000000000000000000400020000000f
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (116 bytes)
8000000000040001000000640300000010000000800100100007fffe00000000
0000000700000000000000000000000000000001000400010000000763617062
6f780000ffffffff000000000000000400000000000000000000000010000000
0000000000040001000000000000000400000005
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (72 bytes)
8000000000040001000000380300000010000000800100100007fffe00000000
000000080000000000000000000000000000000400040001000000022a007062
0000000000000000
## task->pvmd 00040001->80000000 tag 80010004 ctx 7fffe (76 bytes)
80000000000400010000003c0300000010000000800100040007fffe00000000
0000000900000000000000000000000000000001000000136e6f73756368686f
73742e696e76616c69640000
## task->pvmd 00040001->80000000 tag 80010005 ctx 7fffe (76 bytes)
80000000000400010000003c0300000010000000800100050007fffe00000000
0000000a00000000000000000000000000000001000000136e6f73756368686f
73742e696e76616c69640000
## task->pvmd 00040001->80000000 tag 80010007 ctx 7fffe (72 bytes)
8000000000040001000000380300000010000000800100070007fffe00000000
0000000b000000000000000000000000000000136e6f73756368686f73742e69
6e76616c6964006c
## task->pvmd 00040001->80000000 tag 80010009 ctx 7fffe (56 bytes)
8000000000040001000000280300000010000000800100090007fffe00000000
0000000c0000000000000000000000000000000100000005
## task->pvmd 00040001->80000000 tag 8001000f ctx 0 (64 bytes)
80000000000400010000003003000000100000008001000f0000000000000000
0000000000000000000000000000000000000003000000000000004effffffff
## task->pvmd 00040001->80000000 tag 8001000f ctx 0 (68 bytes)
80000000000400010000003403000000100000008001000f0000000000000000
0000000000000000000000000000000000000002000000000000004f00000001
00040001
## task->pvmd 00040001->80000000 tag 8001000a ctx 7fffe (208 bytes)
8000000000040001000000c003000000100000008001000a0007fffe00000000
0000000e0000000000000000000000000000000670766d677300000600000010
00000001000000000000000100000000000000000007ffff8003000500000000
0000000000000000000000040000002d50564d544d41534b3d40404040404040
4040404040404040404040404040404040404040404040404040404000000000
0000000c50564d5452434255463d30000000000c50564d5452434f50543d3000
0000000b50564d4354583d3078300000
## task->pvmd 00040001->80000000 tag 8001000e ctx 0 (56 bytes)
80000000000400010000002803000000100000008001000e0000000000000000
000000000000000000000000000000000000000100040003
## task->pvmd 00040001->40040001 tag 8003000c ctx 7ffff (56 bytes)
40040001000400010000002803000000100000008003000c0007ffff00000000
000000000000000000000000000000000000000100040003
## task->pvmd 00040001->00040003 tag 00000001 ctx 7fffc (60 bytes)
00040003000400010000002c0300000010000000000000010007fffc00000000
00000000000000000000000000000000000000076361706772700006
## task->pvmd 00040001->00040003 tag 00000007 ctx 7fffc (60 bytes)
00040003000400010000002c0300000010000000000000070007fffc00000000
00000000000000000000000000000000000000076361706772700006
## task->pvmd 00040001->00040003 tag 00000005 ctx 7fffc (64 bytes)
0004000300040001000000300300000010000000000000050007fffc00000000
0000000000000000000000000000000000000007636170677270000600040001
## task->pvmd 00040001->00040003 tag 00000006 ctx 7fffc (64 bytes)
0004000300040001000000300300000010000000000000060007fffc00000000
0000000000000000000000000000000000000007636170677270000600000000
## task->pvmd 00040001->00040003 tag 00000003 ctx 7fffc (64 bytes)
0004000300040001000000300300000010000000000000030007fffc00000000
0000000000000000000000000000000000000007636170677270000600000001
## task->pvmd 00040001->00040003 tag 0000000d ctx 7fffc (64 bytes)
00040003000400010000003003000000100000000000000d0007fffc00000000
0000000000000000000000000000000000000007636170677270000600000001
## task->pvmd 00040001->00040003 tag 00000002 ctx 7fffc (60 bytes)
00040003000400010000002c0300000010000000000000020007fffc00000000
00000000000000000000000000000000000000076361706772700006
## task->pvmd 00040001->80000000 tag 80010011 ctx 7fffe (48 bytes)
8000000000040001000000200300000010000000800100110007fffe00000000
00000072000000000000000000000000
## task->pvmd 00040001->80000000 tag 80010008 ctx 7fffe (48 bytes)
8000000000040001000000200300000010000000800100080007fffe00000000
00000074000000000000000000000000
## pvmd->task 80000000->00000000 tag 80010001 ctx 7fffe (92 bytes)
00000000800000000000004c0300000010000000800100010007fffe00000000
0000000100000000000000000000000000000526000000010000001f2f746d70
2f70766d6361702f746d702f70766d746d703032353138312e310000
## pvmd->task 80000000->00040001 tag 80010002 ctx 7fffe (116 bytes)
0004000180000000000000640300000010000000800100020007fffe00000000
0000000200000000000000000000000000000001000400010000000000000000
000000000000000000000000000000000000000000000ff000408c410000000e
37663030303030313a6536666600000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
00000003000000000000000000000000ffffffe0
## pvmd->task 80000000->00040001 tag 80030005 ctx 7ffff (60 bytes)
00040001800000000000002c0300000010000000800300050007ffff00000000
0000000000000000000000000000000000040002fffffffe00040001
## pvmd->task 80000000->00040001 tag 80030005 ctx 7ffff (60 bytes)
00040001800000000000002c0300000010000000800300050007ffff00000000
0000000000000000000000000000000000040002ffffffff00040001
## pvmd->task 80000000->00040001 tag 8001000a ctx 7fffe (56 bytes)
00040001800000000000002803000000100000008001000a0007fffe00000000
000000040000000000000000000000000000000100040002
## pvmd->task 80000000->00040001 tag 80030005 ctx 7ffff (72 bytes)
0004000180000000000000380300000010000000800300050007ffff00000000
00000000000000000000000000000000000400020000000f6368696c64206f75
74206c696e650a2f
## pvmd->task 80000000->00040001 tag 8001000c ctx 7fffe (48 bytes)
00040001800000000000002003000000100000008001000c0007fffe00000000
00000005000000000000000000000000
## pvmd->task 80000000->00040001 tag 8001000c ctx 7fffe (48 bytes)
00040001800000000000002003000000100000008001000c0007fffe00000000
00000006000000000000000000000000
## pvmd->task 80000000->00040001 tag 80030005 ctx 7ffff (56 bytes)
0004000180000000000000280300000010000000800300050007ffff00000000
000000000000000000000000000000000004000200000000
## pvmd->task 80000000->00040001 tag 0000004d ctx 0 (52 bytes)
00040001800000000000002403000000100000000000004d0000000000000000
0000000000000000000000000000000000040002
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
0000000700000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (84 bytes)
0004000180000000000000440300000010000000800100100007fffe00000000
0000000800000000000000000000000000000000000000010000000763617062
6f78000100000001000000000004000100000000
## pvmd->task 80000000->00040001 tag 80010004 ctx 7fffe (84 bytes)
0004000180000000000000440300000010000000800100040007fffe00000000
000000090000000000000000000000000000000100000000ffffffdc00000001
0078000100000001000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010005 ctx 7fffe (56 bytes)
0004000180000000000000280300000010000000800100050007fffe00000000
0000000a00000000000000000000000000000001fffffffa
## pvmd->task 80000000->00040001 tag 80010007 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100070007fffe00000000
0000000b000000000000000000000000fffffffa
## pvmd->task 80000000->00040001 tag 80010009 ctx 7fffe (56 bytes)
0004000180000000000000280300000010000000800100090007fffe00000000
0000000c0000000000000000000000000000000100000000
## pvmd->task 80000000->00040001 tag 8001000a ctx 7fffe (56 bytes)
00040001800000000000002803000000100000008001000a0007fffe00000000
0000000e0000000000000000000000000000000100040003
## pvmd->task 00040003->00040001 tag 00000001 ctx 7fffc (52 bytes)
0004000100040003000000240300000010000000000000010007fffc00000000
0000000000000000000000000000000000000000
## pvmd->task 00040003->00040001 tag 00000007 ctx 7fffc (56 bytes)
0004000100040003000000280300000010000000000000070007fffc00000000
000000000000000000000000000000000000000100000002
## pvmd->task 00040003->00040001 tag 00000005 ctx 7fffc (56 bytes)
0004000100040003000000280300000010000000000000050007fffc00000000
000000000000000000000000000000000000000000000002
## pvmd->task 00040003->00040001 tag 00000006 ctx 7fffc (56 bytes)
0004000100040003000000280300000010000000000000060007fffc00000000
000000000000000000000000000000000004000100000002
## pvmd->task 00040003->00040001 tag 00000003 ctx 7fffc (52 bytes)
0004000100040003000000240300000010000000000000030007fffc00000000
0000000000000000000000000000000000000001
## pvmd->task 00040003->00040001 tag 0000000d ctx 7fffc (132 bytes)
00040001000400030000007403000000100000000000000d0007fffc00000000
0000000000000000000000000000000000000001000000010000000600000007
6361706772700000000000010000000a00040001ffffffffffffffffffffffff
ffffffffffffffffffffffffffffffffffffffffffffffff0000000100000001
00040001
## pvmd->task 00040003->00040001 tag 00000002 ctx 7fffc (52 bytes)
0004000100040003000000240300000010000000000000020007fffc00000000
0000000000000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010011 ctx 7fffe (84 bytes)
0004000180000000000000440300000010000000800100110007fffe00000000
00000072000000000000000000000000000000000004000000000003766d0000
000000084c494e5558363400000003e800408c41
"#;

const EXTRA2_NAME: &str = "td_extra_capture_2 (embedded)";
const EXTRA2: &str = r#"
# captured 2026-11-26 (strace of one task against pvmd 3.4.6, PVM_TMP private): PvmSelfOutputTid (TM_SETOPT and the output records the pvmd sends back, user tag 0), pvm_newcontext/pvm_freecontext, failing hostsync/pstat/tasks, notify and notify cancel, persistent mailbox put / read-and-delete get / remove, pvm_reg_hoster, pvm_reg_tasker, pvm_reg_tracer, TM_EXIT
## task->pvmd ffffffff->80000000 tag 80010001 ctx 7fffe (88 bytes)
80000000ffffffff000000480300000010000000800100010007fffe00000000
00000001000000000000000000000000000005260000001f2f746d702f70766d
6361702f746d702f70766d746d703030323930382e300000
## task->pvmd ffffffff->80000000 tag 80010002 ctx 7fffe (56 bytes)
80000000ffffffff000000280300000010000000800100020007fffe00000000
0000000200000000000000000000000000000b5c00000000
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (88 bytes)
8000000000040001000000480300000010000000800100100007fffe00000000
000000030000000000000000000000000000000300040001000000132323235f
50564d5f5452414345525f23232300300000000000000000
## task->pvmd 00040001->80000000 tag 80010016 ctx 7fffe (64 bytes)
8000000000040001000000300300000010000000800100160007fffe00000000
000000040000000000000000000000000000000100000006343030303100235f
## task->pvmd 00040001->80000000 tag 80010016 ctx 7fffe (60 bytes)
80000000000400010000002c0300000010000000800100160007fffe00000000
00000005000000000000000000000000000000010000000230000000
## task->pvmd 00040001->80000000 tag 80010018 ctx 7fffe (52 bytes)
8000000000040001000000240300000010000000800100180007fffe00000000
0000000600000000000000000000000000000000
## task->pvmd 00040001->80000000 tag 80010018 ctx 7fffe (52 bytes)
8000000000040001000000240300000010000000800100180007fffe00000000
0000000700000000000000000000000000040001
## task->pvmd 00040001->80000000 tag 80010015 ctx 7fffe (52 bytes)
8000000000040001000000240300000010000000800100150007fffe00000000
000000080000000000000000000000007ffc0000
## task->pvmd 00040001->80000000 tag 8001000b ctx 7fffe (52 bytes)
80000000000400010000002403000000100000008001000b0007fffe00000000
0000000900000000000000000000000000080001
## task->pvmd 00040001->80000000 tag 8001000d ctx 7fffe (52 bytes)
80000000000400010000002403000000100000008001000d0007fffe00000000
0000000a00000000000000000000000000080000
## task->pvmd 00040001->80000000 tag 8001000f ctx 0 (68 bytes)
80000000000400010000003403000000100000008001000f0000000000000000
0000000000000000000000000000000000000001000000000000004d00000001
00040001
## task->pvmd 00040001->80000000 tag 8001000f ctx 0 (68 bytes)
80000000000400010000003403000000100000008001000f0000000000000000
0000000000000000000000000000000000000101000000000000004d00000001
00040001
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (116 bytes)
8000000000040001000000640300000010000000800100100007fffe00000000
0000000b00000000000000000000000000000001000400010000000863617062
6f783200ffffffff000000010000000400000000000000000000000010000000
0000000000040001000000000000000400000007
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (76 bytes)
80000000000400010000003c0300000010000000800100100007fffe00000000
0000000c00000000000000000000000000000003000400010000000863617062
6f7832000000000000000010
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (76 bytes)
80000000000400010000003c0300000010000000800100100007fffe00000000
0000000d00000000000000000000000000000002000400010000000863617062
6f7832000000000000000000
## task->pvmd 00040001->80000000 tag 80010013 ctx 7fffe (52 bytes)
8000000000040001000000240300000010000000800100130007fffe00000000
0000000e00000000000000000000000000000001
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (128 bytes)
8000000000040001000000700300000010000000800100100007fffe00000000
0000000f0000000000000000000000000000000100040001000000132323235f
50564d5f484f535445525f2323230000ffffffff000000020000000400000000
0000000000000000100000000000000000040001000000000000000400040001
## task->pvmd 00040001->80000000 tag 80010012 ctx 7fffe (52 bytes)
8000000000040001000000240300000010000000800100120007fffe00000000
0000001000000000000000000000000000000001
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (128 bytes)
8000000000040001000000700300000010000000800100100007fffe00000000
000000110000000000000000000000000000000100040001000000132323235f
50564d5f5441534b45525f2323230000ffffffff000000020000000400000000
0000000000000000100000000000000000040001000000000000000400040001
## task->pvmd 00040001->80000000 tag 80010014 ctx 7fffe (116 bytes)
8000000000040001000000640300000010000000800100140007fffe00000000
00000012000000000000000000000000000000010007fff0000000420007fff1
0000004300000024404040404040404040404040404040404040404040404040
4040404040404040404040000000000000000000
## task->pvmd 00040001->80000000 tag 80010010 ctx 7fffe (192 bytes)
8000000000040001000000b00300000010000000800100100007fffe00000000
000000130000000000000000000000000000000100040001000000132323235f
50564d5f5452414345525f2323230000ffffffff000000000000004400000000
0000000000000000100000000000000000040001000000000000004400040001
0007fff0000000420007fff10000004300000024404040404040404040404040
4040404040404040404040404040404040404040404040000000000000000000
## task->pvmd 00040001->80000000 tag 80010003 ctx 7fffe (48 bytes)
8000000000040001000000200300000010000000800100030007fffe00000000
00000014000000000000000000000000
## pvmd->task 80000000->00000000 tag 80010001 ctx 7fffe (92 bytes)
00000000800000000000004c0300000010000000800100010007fffe00000000
0000000100000000000000000000000000000526000000010000001f2f746d70
2f70766d6361702f746d702f70766d746d703030323433392e310000
## pvmd->task 80000000->00040001 tag 80010002 ctx 7fffe (116 bytes)
0004000180000000000000640300000010000000800100020007fffe00000000
0000000200000000000000000000000000000001000400010000000000000000
000000000000000000000000000000000000000000000ff000408c410000000e
37663030303030313a3866626400000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
00000003000000000000000000000000ffffffe0
## pvmd->task 80000000->00040001 tag 00000000 ctx 0 (60 bytes)
00040001800000000000002c0300000010000000000000000000000000000000
0000000000000000000000000000000000040001ffffffff00000000
## pvmd->task 80000000->00040001 tag 00000000 ctx 0 (60 bytes)
00040001800000000000002c0300000010000000000000000000000000000000
0000000000000000000000000000000000040001fffffffe00000000
## pvmd->task 80000000->00040001 tag 80010016 ctx 7fffe (48 bytes)
0004000180000000000000200300000010000000800100160007fffe00000000
00000004000000000000000000000000
## pvmd->task 80000000->00040001 tag 00000000 ctx 0 (56 bytes)
0004000180000000000000280300000010000000000000000000000000000000
000000000000000000000000000000000004000100000000
## pvmd->task 80000000->00040001 tag 80010016 ctx 7fffe (48 bytes)
0004000180000000000000200300000010000000800100160007fffe00000000
00000005000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010018 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100180007fffe00000000
0000000600000000000000000000000000040001
## pvmd->task 80000000->00040001 tag 80010018 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100180007fffe00000000
0000000700000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010015 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100150007fffe00000000
00000008000000000000000000000000fffffffa
## pvmd->task 80000000->00040001 tag 8001000b ctx 7fffe (52 bytes)
00040001800000000000002403000000100000008001000b0007fffe00000000
00000009000000000000000000000000ffffffe1
## pvmd->task 80000000->00040001 tag 8001000d ctx 7fffe (52 bytes)
00040001800000000000002403000000100000008001000d0007fffe00000000
0000000a000000000000000000000000fffffffa
## pvmd->task 80000000->00040001 tag 0000004d ctx 0 (52 bytes)
00040001800000000000002403000000100000000000004d0000000000000000
0000000000000000000000000000000000040001
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
0000000b00000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (96 bytes)
0004000180000000000000500300000010000000800100100007fffe00000000
0000000c00000000000000000000000000000000000000040000000000000000
0000000010000000000000000004000100000000000000000000000400000007
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
0000000d000000000000000000000000ffffffe0
## pvmd->task 80000000->00040001 tag 80010013 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100130007fffe00000000
0000000e00000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
0000000f00000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010012 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100120007fffe00000000
0000001000000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
0000001100000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010014 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100140007fffe00000000
0000001200000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010010 ctx 7fffe (52 bytes)
0004000180000000000000240300000010000000800100100007fffe00000000
0000001300000000000000000000000000000000
## pvmd->task 80000000->00040001 tag 80010003 ctx 7fffe (48 bytes)
0004000180000000000000200300000010000000800100030007fffe00000000
00000014000000000000000000000000
"#;

/// Walks every frame of every file (and of [`EXTRA`], [`EXTRA2`]); returns the decoded messages and the
/// number of frames.
fn load() -> (Vec<Captured>, usize) {
    let mut files: Vec<_> = std::fs::read_dir(vector_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 13, "vector files");
    let mut texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    texts.push((EXTRA_NAME.to_string(), EXTRA.to_string()));
    texts.push((EXTRA2_NAME.to_string(), EXTRA2.to_string()));
    let mut out = Vec::new();
    let mut nframes = 0;
    for (name, text) in texts {
        let v = hexvec::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!v.description.is_empty(), "{name}: description");
        assert!(!v.frames.is_empty(), "{name}: frames");
        let mut reasm = Reassembler::default();
        for f in &v.frames {
            nframes += 1;
            let b = &f.bytes;
            let what = format!("{name}:{} {}", f.line, f.label);
            let (msg, first_payload) = if name.starts_with("dd_") {
                let h = DatagramHeader::parse(b).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&h.to_bytes()[..], &b[..16], "{what}: datagram header re-emit");
                if !h.flags.contains(FragFlags::DAT) {
                    assert_eq!(b.len(), 16, "{what}: control packets carry no data");
                    assert!(h.flags.intersects(FragFlags::ACK | FragFlags::FIN), "{what}");
                    continue;
                }
                let m = reasm
                    .push_parts(h.src, h.dst, h.flags, &b[16..])
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                (m, &b[16..])
            } else {
                let h = StreamFragHeader::parse(b, 1 << 20).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(h.len as usize, b.len() - 16, "{what}: stream length field");
                assert_eq!(&h.to_bytes()[..], &b[..16], "{what}: stream header re-emit");
                (reasm.push(b).unwrap_or_else(|e| panic!("{what}: {e}")), &b[16..])
            };
            let msg = msg.unwrap_or_else(|| panic!("{what}: every captured message is one fragment"));
            let raw_header = first_payload[..32].to_vec();
            let mut masked = raw_header.clone();
            for r in UNINITIALISED {
                masked[r].fill(0);
            }
            assert_eq!(msg.header.to_bytes().to_vec(), masked, "{what}: message header re-emit");
            assert_eq!(MsgHeader::parse(&raw_header).unwrap(), msg.header);
            let body =
                body::decode(&msg.header, msg.src, msg.dst, &msg.body).unwrap_or_else(|e| panic!("{what}: body: {e}"));
            let expect = body::mask_padding(&msg.header, msg.src, msg.dst, &msg.body);
            assert_eq!(body.emit(), expect, "{what}: body re-emit ({body})");
            // Stream frames also re-split to the same bytes.
            if !name.starts_with("dd_") {
                let again = Message {
                    body: expect.clone(),
                    ..msg.clone()
                }
                .to_stream_bytes(4080);
                let mut want = b.clone();
                for r in UNINITIALISED {
                    want[16 + r.start..16 + r.end].fill(0);
                }
                want[48..].copy_from_slice(&expect);
                assert_eq!(again, want, "{what}: fragment re-emit");
            }
            // Display never panics and names the code.
            let _ = body.to_string();
            out.push(Captured {
                file: name.clone(),
                label: f.label.clone(),
                msg,
                raw_header,
                body,
            });
        }
        assert_eq!(reasm.pending(), 0, "{name}: no partial message left");
    }
    (out, nframes)
}

fn find<'a>(all: &'a [Captured], file: &str, nth: usize) -> &'a Captured {
    all.iter()
        .filter(|c| c.file == file)
        .nth(nth)
        .unwrap_or_else(|| panic!("{file} #{nth}"))
}

#[test]
fn every_frame_parses_and_re_emits() {
    let (all, frames) = load();
    assert_eq!(frames, 80 + 56 + 46, "frames in all files");
    assert_eq!(
        all.len(),
        57 + 56 + 46,
        "messages (the rest are ACK/FIN control packets)"
    );
}

#[test]
fn frames_that_are_not_typed_bodies_are_user_messages() {
    let (all, _) = load();
    let mut user: Vec<String> = all
        .iter()
        .filter(|c| matches!(c.body, Body::User { .. }))
        .map(|c| format!("{}: {}", c.file, c.label))
        .collect();
    user.sort();
    // User messages carry application data with no schema on the wire: the XDR one (tag 7)
    // and the raw ones (enc = the sender's dsig) stay bytes.
    assert_eq!(
        user,
        vec![
            "dd_remote_spawn.hex: pkt 22 10.77.0.1:52715 -> 10.77.0.2:51463 user msg src t40002 dst t80001 tag 7 XDR",
            "dd_remote_spawn.hex: pkt 26 10.77.0.2:51463 -> 10.77.0.1:52715 user msg tag 8 RAW",
            "tc_direct_route_unix.hex: fd4 read reply tag 8 RAW on direct link",
            "tc_direct_route_unix.hex: fd4 write user msg tag 7 RAW on direct link",
            "td_user_msg_raw_reply.hex: pvmd->task user message tag 8",
            "td_user_msg_xdr.hex: task->pvmd user message tag 7",
        ]
    );
    assert!(all.iter().all(|c| !matches!(c.body, Body::Unknown { .. })));
}

#[test]
fn connect_handshake_fields() {
    let (all, _) = load();
    let f = "td_connect_handshake.hex";
    let c = find(&all, f, 0);
    assert_eq!((c.msg.src, c.msg.dst), (Tid::UNCONNECTED, Tid::LOCAL_PVMD));
    assert_eq!(
        (c.msg.header.tag, c.msg.header.ctx, c.msg.header.wid),
        (Tm::Connect.code(), SYSCTX_TM, 1)
    );
    let Body::TmConnect(r) = &c.body else {
        panic!("{}", c.body)
    };
    assert_eq!(r.version, TDPROTOCOL);
    assert_eq!(r.path, "/tmp/pvmtmp010862.0");
    let Body::TmConnectAck(a) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!((a.version, a.ack), (1318, 1));
    assert_eq!(a.path, "/tmp/pvmtmp010842.1");
    let Body::TmConn2(r) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((r.pid, r.cookie, r.name.is_none()), (0x2a6e, 0, true));
    let c = find(&all, f, 3);
    let Body::TmConn2Ack(a) = &c.body else { panic!() };
    let cfg = a.config.as_ref().unwrap();
    assert_eq!(a.ack, 1);
    assert_eq!(cfg.tid, Tid(0x40001));
    assert_eq!(c.msg.dst, cfg.tid);
    assert_eq!(cfg.ptid, Tid(0));
    assert_eq!(cfg.udpmax, 4080);
    assert_eq!(cfg.dsig, 0x408c41);
    assert_eq!(cfg.addr, "7f000001:801e");
    assert_eq!(cfg.schedtid, Tid(0));
    assert!(
        c.body.to_string().starts_with("TM_CONN2 reply ack 1 tid t40001"),
        "{}",
        c.body
    );
}

#[test]
fn config_tasks_misc_fields() {
    let (all, _) = load();
    let f = "td_config_tasks_misc.hex";
    assert_eq!(find(&all, f, 0).body, Body::Empty);
    let Body::TmConfigAck(t) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!(t.narches, 1);
    assert_eq!(t.hosts.len(), 1);
    let h = &t.hosts[0];
    assert_eq!((h.tid, h.speed, h.dsig), (Tid(0x40000), 1000, 0x408c41));
    assert_eq!(
        (h.name.to_string_lossy(), h.arch.to_string_lossy()),
        ("vm".into(), "LINUX64".into())
    );
    let Body::TmTask(w) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!(w.tid, Tid(0));
    let c = find(&all, f, 3);
    let Body::TmTaskAck(l) = &c.body else { panic!() };
    assert_eq!(l.status, 0);
    assert_eq!(l.tasks.len(), 1);
    let t = &l.tasks[0];
    assert_eq!(
        (t.tid, t.ptid, t.host, t.flag, t.pid),
        (Tid(0x4000b), Tid(0), Tid(0x40000), 4, 0x3374)
    );
    assert_eq!(t.a_out, "");
    // The pad after the empty a_out string is garbage ("INU") in the capture, and masked.
    assert_ne!(
        body::mask_padding(&c.msg.header, c.msg.src, c.msg.dst, &c.msg.body),
        c.msg.body
    );
    let c = find(&all, f, 4);
    let Body::TmMstat(n) = &c.body else { panic!() };
    assert_eq!(n.name, "vm");
    assert_eq!(c.msg.body[7], 0x0b, "garbage pad byte in the capture");
    assert_eq!(
        body::mask_padding(&c.msg.header, c.msg.src, c.msg.dst, &c.msg.body)[7],
        0
    );
    assert!(matches!(&find(&all, f, 5).body, Body::TmMstatAck(s) if s.value == 0));
    assert!(matches!(&find(&all, f, 6).body, Body::TmPstat(t) if t.tid == Tid(0x4000b)));
    assert!(matches!(&find(&all, f, 7).body, Body::TmPstatAck(s) if s.value == 0));
    assert!(matches!(&find(&all, f, 8).body, Body::TmHostSync(t) if t.tid == Tid(0x40000)));
    let Body::TmHostSyncAck(s) = &find(&all, f, 9).body else {
        panic!()
    };
    assert_eq!(s.status, 0);
    assert_eq!((s.time.unwrap().sec, s.time.unwrap().usec), (0x6b07801f, 0x540b8));
    assert!(matches!(&find(&all, f, 10).body, Body::TmContext(c) if c.value == 0));
    assert!(matches!(&find(&all, f, 11).body, Body::TmContextAck(c) if c.value == 0x40002));
}

#[test]
fn mailbox_fields() {
    let (all, _) = load();
    let f = "td_mailbox.hex";
    let Body::TmDb(r) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!((r.op, r.tid, r.index, r.flags), (DbOp::Get.code(), Tid(0x4000b), 0, 0));
    assert_eq!(r.class, "###_PVM_TRACER_###");
    assert_eq!(find(&all, f, 1).body, Body::TmDbAck(DbReply::Status(-32)));
    let Body::TmDb(p) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((p.op, p.index), (DbOp::Put.code(), -1));
    assert_eq!(p.class, "specbox");
    let m = p.msg.as_ref().unwrap();
    assert_eq!(
        (m.enc, m.src, m.dst, m.tag, m.ctx),
        (ENC_XDR, Tid(0x4000b), Tid(0), 0, 0)
    );
    assert_eq!(m.frags, vec![vec![0, 0, 0x30, 0x39]]);
    assert_eq!(find(&all, f, 3).body, Body::TmDbAck(DbReply::Status(0)));
    assert!(matches!(&find(&all, f, 4).body, Body::TmDb(g) if g.op == 3 && g.msg.is_none()));
    let Body::TmDbAck(DbReply::Entry { index, msg }) = &find(&all, f, 5).body else {
        panic!()
    };
    assert_eq!(*index, 0);
    // The pvmd's stored copy gains an empty first fragment (its header-only fragment): the
    // GET reply packs two fragments where the PUT packed one.
    assert_eq!(msg.frags, vec![vec![], vec![0, 0, 0x30, 0x39]]);
    assert_eq!(msg.body(), m.body());
    assert_eq!((msg.enc, msg.src), (m.enc, m.src));
    assert!(matches!(&find(&all, f, 6).body, Body::TmDb(g) if g.op == DbOp::Remove.code()));
    assert_eq!(find(&all, f, 7).body, Body::TmDbAck(DbReply::Status(0)));
}

#[test]
fn spawn_mca_notify_fields() {
    let (all, _) = load();
    let Body::TmSpawn(s) = &find(&all, "td_spawn.hex", 0).body else {
        panic!()
    };
    assert_eq!(s.file, "pvmspec_slave");
    assert_eq!((s.flags, s.count, s.argv.len()), (0, 1, 0));
    assert_eq!(s.where_, "");
    assert_eq!(s.env.len(), 4);
    assert!(s.env[0].to_string_lossy().starts_with("PVMTMASK=@@@"));
    assert_eq!(s.env[1], "PVMTRCBUF=0");
    assert_eq!(s.env[2], "PVMTRCOPT=0");
    assert_eq!(s.env[3], "PVMCTX=0x0");
    assert_eq!(
        find(&all, "td_spawn.hex", 1).body,
        Body::TmSpawnAck(TidsOrError::Tids(vec![Tid(0x40002)]))
    );
    let f = "td_mca_siblings_notify.hex";
    let c = find(&all, f, 0);
    assert_eq!(c.msg.header.ctx, 0, "TM_MCA goes with ctx 0, not SYSCTX_TM");
    assert!(matches!(&c.body, Body::TmMca(l) if l.tids == [Tid(0x40002)]));
    let c = find(&all, f, 1);
    assert_eq!(c.msg.dst, Tid::multicast_of(Tid(0x40001)));
    assert_eq!(body::direction(c.msg.src, c.msg.dst), body::Direction::TaskToTask);
    assert!(matches!(&c.body, Body::TcSiblings(l) if l.tids == [Tid(0x40002)]));
    let Body::TmNotify(n) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!(
        (n.what, n.ctx, n.tag, n.count, n.tids.clone()),
        (1, 0, 99, 1, vec![Tid(0x40002)])
    );
    let c = find(&all, f, 3);
    assert_eq!(body::direction(c.msg.src, c.msg.dst), body::Direction::FromDaemon);
    assert!(
        matches!(&c.body, Body::NotifyTid(t) if t.tid == Tid(0x40002)),
        "{}",
        c.body
    );
    let f = "tc_direct_route_unix.hex";
    let Body::TcConReq(r) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!(
        (r.version, r.path.to_string_lossy()),
        (1318, "/tmp/pvmtmp010867.1".into())
    );
    let Body::TmNotify(n) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!((n.ctx, n.tag), (SYSCTX_TC, pvm_proto::codes::Tc::TaskExit.code()));
    assert!(find(&all, f, 1).body.to_string().contains("TC_TASKEXIT"));
    let Body::TcConAck(a) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((a.ack, a.path.to_string_lossy()), (0, "/tmp/pvmtmp010868.1".into()));
    assert_eq!(find(&all, "td_exit.hex", 0).body, Body::Empty);
    assert_eq!(find(&all, "td_exit.hex", 1).body, Body::Empty);
}

#[test]
fn daemon_to_daemon_fields() {
    let (all, _) = load();
    let f = "dd_add_host_sequence.hex";
    let c = find(&all, f, 0);
    assert_eq!(c.msg.header.tag, Dm::StartAck.code());
    assert_eq!(
        &c.raw_header[12..16],
        b"ed f",
        "uninitialised bytes in the pvmd' header"
    );
    let Body::DmStartAck(s) = &c.body else { panic!() };
    assert_eq!(s.results.len(), 1);
    assert_eq!(s.results[0].tid, Tid(0x80000), "a hostpart, not a pvmd tid");
    assert_eq!(
        s.results[0].result,
        "ddpro<2316> arch<LINUX64> ip<0a4d0002:c907> mtu<4080> dsig<4230209>"
    );
    assert!(matches!(&find(&all, f, 1).body, Body::DmSlConf(s) if s.entries.is_empty()));
    let c = find(&all, f, 2);
    assert_eq!(c.msg.header.wid, 0x40005);
    let Body::DmHtUpd(u) = &c.body else { panic!() };
    assert_eq!((u.serial, u.master, u.console, u.hosts.len()), (2, 1, 1, 2));
    assert_eq!(u.hosts[0].name, "10.77.0.1");
    assert_eq!(u.hosts[0].addr, "0a4d0001:cdeb");
    assert_eq!((u.hosts[1].index, u.hosts[1].mtu, u.hosts[1].speed), (2, 4080, 1000));
    assert_eq!(find(&all, f, 3).body, Body::Empty);
    assert_eq!(find(&all, f, 4).body, Body::Empty);

    let f = "dd_remote_spawn.hex";
    let Body::DmExec(e) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!((e.ptid, e.count, e.placement), (Tid(0x40002), 1, Some((0, 1))));
    assert_eq!(e.file, "pvmspec_slave");
    assert_eq!(e.env.len(), 4);
    assert_eq!(
        find(&all, f, 1).body,
        Body::DmExecAck(TidsOrError::Tids(vec![Tid(0x80001)]))
    );
    let Body::DmMca(m) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((m.gtid, m.tids.clone()), (Tid(0x40040002), vec![Tid(0x80001)]));
    assert!(matches!(&find(&all, f, 3).body, Body::TcSiblings(l) if l.tids == [Tid(0x80001)]));
    assert!(matches!(&find(&all, f, 4).body, Body::DmNotify(n) if n.what == 1 && n.tid == Tid(0x80001)));
    let Body::DmTaskOut(o) = &find(&all, f, 6).body else {
        panic!()
    };
    assert_eq!(o.tid, Tid(0x80001));
    assert_eq!(
        o.kind,
        OutputKind::Data(b"slave 80001 got 1 2 -3 12345678 258 -2 287454020 4294967291\n".to_vec())
    );
    assert!(matches!(&find(&all, f, 8).body, Body::DmNotifyAck(t) if t.tid == Tid(0x80001)));

    let f = "dd_task_query_and_delete.hex";
    assert!(matches!(&find(&all, f, 0).body, Body::DmTask(t) if t.tid == Tid(0)));
    assert!(matches!(&find(&all, f, 1).body, Body::DmTaskAck(t) if t.tasks.is_empty()));

    let f = "dd_direct_route_tcp.hex";
    let Body::TcConReq(r) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!(r.path, "0a4d0001:dcaf");
    let Body::TcConAck(a) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!((a.ack, a.path.to_string_lossy()), (0, "0a4d0002:8d31".into()));
}

#[test]
fn display_is_one_line_and_names_things() {
    let (all, _) = load();
    for c in &all {
        let s = c.body.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.len() < 600, "{s}");
    }
    let s = find(&all, "td_mailbox.hex", 2).body.to_string();
    assert!(s.starts_with("TM_DB TMDB_PUT t4000b \"specbox\" index -1"), "{s}");
    let s = find(&all, "td_mailbox.hex", 1).body.to_string();
    assert_eq!(s, "TM_DB reply -32 (PvmNotFound)");
}

#[test]
fn extra_capture_fields() {
    let (all, _) = load();
    let x = |i| &find(&all, EXTRA_NAME, i).body;
    let c = find(&all, EXTRA_NAME, 3);
    // pvm_catchout(): a PvmTaskExit notify on itself, tag TC_OUTPUTX in SYSCTX_TC.
    assert_eq!(c.msg.header.ctx, 0);
    let Body::TmNotify(n) = x(3) else { panic!() };
    assert_eq!(
        (n.ctx, n.tag, n.tids.clone()),
        (SYSCTX_TC, pvm_proto::codes::Tc::OutputX.code(), vec![Tid(0x40001)])
    );
    let Body::TmSpawn(s) = x(4) else { panic!() };
    assert_eq!(
        (s.outtid, s.outctx, s.outtag),
        (Tid(0x40001), SYSCTX_TC, pvm_proto::codes::Tc::Output.code())
    );
    assert!(x(4).to_string().contains("out t40001/SYSCTX_TC/TC_OUTPUT"), "{}", x(4));
    assert!(matches!(x(8), Body::TmSendSig(s) if s.signum == 0));
    assert!(matches!(x(9), Body::TmSendSig(s) if s.signum == 15));
    assert!(matches!(x(11), Body::TmDb(d) if d.op == DbOp::Names.code() && d.class == "*"));
    let Body::TmNotify(n) = x(16) else { panic!() };
    assert_eq!(
        (n.what, n.count, n.tids.len()),
        (3, -1, 0),
        "PvmHostAdd carries a count, no tids"
    );
    // Output records arrive as TC_OUTPUT: TO_NEW, TO_SPAWN, data, EOF.
    let rec = |i| match x(i) {
        Body::TcOutput(o) => o.clone(),
        b => panic!("{b}"),
    };
    assert_eq!(rec(33).kind, OutputKind::New { ptid: Tid(0x40001) });
    assert_eq!(rec(34).kind, OutputKind::Spawn { ptid: Tid(0x40001) });
    assert_eq!(rec(36).kind, OutputKind::Data(b"child out line\n".to_vec()));
    assert_eq!(rec(39).kind, OutputKind::Eof);
    assert!(rec(39).tid == Tid(0x40002));
    let c = find(&all, EXTRA_NAME, 36);
    assert_eq!(*c.msg.body.last().unwrap(), b'/', "garbage pad after the output bytes");
    assert_eq!(x(37), &Body::Empty, "TM_SENDSIG reply");
    assert!(matches!(x(40), Body::NotifyTid(t) if t.tid == Tid(0x40002)));
    let Body::TmDbAck(DbReply::Names { status, classes }) = x(42) else {
        panic!("{}", x(42))
    };
    assert_eq!((*status, classes.len()), (0, 1));
    assert_eq!(classes[0].name, "capbox");
    assert_eq!(classes[0].entries.len(), 1);
    assert_eq!(
        (classes[0].entries[0].index, classes[0].entries[0].owner),
        (0, Tid(0x40001))
    );
    let Body::TmAddHostAck(a) = x(43) else { panic!() };
    assert_eq!((a.status, a.narches, a.hosts.len()), (1, Some(0), 1));
    assert_eq!(a.hosts[0].tid, Tid(-36), "PvmIPLoopback: the pvmd runs on 127.0.0.1");
    assert!(matches!(x(44), Body::TmDelHostAck(l) if l.status == 1 && l.results == [-6]));
    assert!(matches!(x(45), Body::TmMstatAck(s) if s.value == -6));
    assert!(matches!(x(46), Body::TmTickleAck(l) if l.values == [0]));
    // Group server, through the pvmd between two tasks.
    let c = find(&all, EXTRA_NAME, 21);
    assert_eq!(
        (c.msg.header.ctx, body::direction(c.msg.src, c.msg.dst)),
        (0x7fffc, body::Direction::TaskToTask)
    );
    assert!(matches!(x(21), Body::GsJoin(g) if g.group == "capgrp"));
    assert!(matches!(x(23), Body::GsGetInst(g) if g.arg == 0x40001));
    assert!(matches!(x(26), Body::GsStaticGroup(g) if g.arg == 1));
    assert!(matches!(x(48), Body::GsJoinAck(i) if i.value == 0));
    assert!(matches!(x(49), Body::GsGsizeAck(v) if v.value == 1 && v.state.state == 2 && v.state.info.is_none()));
    assert!(matches!(x(51), Body::GsGetTidAck(v) if v.value == 0x40001));
    assert!(matches!(x(52), Body::GsBarrierAck(i) if i.value == 1));
    let Body::GsStaticGroupAck(GsStaticAck::Formed(v)) = x(53) else {
        panic!("{}", x(53))
    };
    let info = v.state.info.as_ref().unwrap();
    assert_eq!((v.value, v.state.state, info.name_len, info.ntids), (1, 1, 6, 1));
    assert_eq!(info.name, "capgrp");
    assert_eq!(info.tids.len(), 10, "maxntids slots");
    assert_eq!(info.tids[0], Tid(0x40001));
    assert!(info.tids[1..].iter().all(|t| *t == Tid(-1)));
    assert_eq!(
        (info.np_onhost.clone(), info.pcoord.clone()),
        (vec![1], vec![Tid(0x40001)])
    );
    assert!(matches!(x(54), Body::GsLeaveAck(i) if i.value == 0));
    // TM_HALT (no reply) and pvm_reg_rm's TM_SCHED, whose reply has only the master host.
    assert_eq!(find(&all, EXTRA_NAME, 28).msg.header.tag, Tm::Sched.code());
    assert_eq!(x(28), &Body::Empty);
    assert_eq!(find(&all, EXTRA_NAME, 29).msg.header.tag, Tm::Halt.code());
    assert_eq!(x(29), &Body::Empty);
    let Body::TmSchedAck(s) = x(55) else { panic!() };
    let m = s.master.as_ref().unwrap();
    assert_eq!((s.old, m.tid, m.speed), (Tid(0), Tid(0x40000), 1000));
    assert_eq!(m.arch, "LINUX64");
}

#[test]
fn every_prefix_of_every_captured_body_is_handled() {
    let (all, _) = load();
    let mut rejected = 0;
    for c in &all {
        let (h, s, d) = (&c.msg.header, c.msg.src, c.msg.dst);
        for n in 0..c.msg.body.len() {
            let cut = &c.msg.body[..n];
            match body::decode(h, s, d, cut) {
                Ok(b) => assert_eq!(b.emit(), body::mask_padding(h, s, d, cut), "{}: {b}", c.label),
                Err(e) => {
                    rejected += 1;
                    assert!(e.offset <= n);
                }
            }
        }
    }
    assert!(rejected > 2000, "{rejected}");
}

#[test]
fn extra_capture_2_fields() {
    let (all, _) = load();
    let x = |i| &find(&all, EXTRA2_NAME, i).body;
    let Body::TmSetOpt(o) = x(3) else { panic!("{}", x(3)) };
    assert_eq!(o.entries, vec![(1, "40001".into())], "values travel as hex strings");
    assert!(x(3).to_string().contains("TS_OUTTID=\"40001\""));
    assert!(matches!(x(5), Body::TmContext(c) if c.value == 0));
    assert!(matches!(x(6), Body::TmContext(c) if c.value == 0x40001));
    assert!(matches!(x(11), Body::TmNotify(n) if n.what == 1 | 256));
    let Body::TmTracer(t) = x(19) else { panic!() };
    let a = t.args.as_ref().unwrap();
    assert_eq!(
        (t.regme, a.trcctx, a.trctag, a.outctx, a.outtag),
        (1, 0x7fff0, 66, 0x7fff1, 67)
    );
    assert_eq!(a.tmask.as_bytes().len(), 35);
    assert!(matches!(x(21), Body::Empty), "TM_EXIT");
    // Replies (pvmd -> task start at 22).
    let out = |i| match x(i) {
        Body::TaskOutput(o) => o.clone(),
        b => panic!("{b}"),
    };
    let c = find(&all, EXTRA2_NAME, 25);
    assert_eq!((c.msg.header.tag, c.msg.header.ctx, c.msg.src), (0, 0, Tid::LOCAL_PVMD));
    assert_eq!(out(25).kind, OutputKind::Spawn { ptid: Tid(0) });
    assert_eq!(out(26).kind, OutputKind::New { ptid: Tid(0) });
    assert_eq!(out(28).kind, OutputKind::Eof);
    assert!(matches!(x(30), Body::TmContextAck(c) if c.value == 0x40001));
    assert!(matches!(x(32), Body::TmHostSyncAck(h) if h.status == -6 && h.time.is_none()));
    assert!(matches!(x(33), Body::TmPstatAck(s) if s.value == -31));
    assert!(matches!(x(34), Body::TmTaskAck(t) if t.status == -6 && t.tasks.is_empty()));
    assert!(
        matches!(x(35), Body::NotifyTid(t) if t.tid == Tid(0x40001)),
        "cancel fires at once"
    );
    let Body::TmDbAck(DbReply::Entry { index, msg }) = x(37) else {
        panic!("{}", x(37))
    };
    assert_eq!(
        (*index, msg.frags.len(), msg.body()),
        (0, 2, 7i32.to_be_bytes().to_vec())
    );
    assert_eq!(
        x(38),
        &Body::TmDbAck(DbReply::Status(-32)),
        "read-and-delete removed it"
    );
    for i in [39, 41, 43] {
        assert!(matches!(x(i), Body::TmHosterAck(v) | Body::TmTaskerAck(v) | Body::TmTracerAck(v) if v.value == 0));
    }
}
