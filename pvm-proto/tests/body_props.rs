//! Round trips of generated bodies, and truncation of captured ones.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use pvm_proto::body::*;
use pvm_proto::codes::{Dm, Gs, Sm, Tc, Tm, DSIG_X86_64, ENC_XDR, SYSCTX_DG, SYSCTX_TC, SYSCTX_TM};
use pvm_proto::frag::{DatagramHeader, FragFlags, StreamFragHeader};
use pvm_proto::hexvec;
use pvm_proto::mesg::MsgHeader;
use pvm_proto::Tid;

// ---- generators ------------------------------------------------------------------------------

fn route_ext() -> impl Strategy<Value = Option<RouteExt>> {
    option::of((any::<i32>(), option::of(any::<i32>())).prop_map(|(max_frag, caps)| RouteExt { max_frag, caps }))
}

fn xs() -> impl Strategy<Value = XStr> {
    vec(1u8..=255, 0..12).prop_map(XStr)
}
fn group() -> impl Strategy<Value = XStr> {
    vec(1u8..=255, 1..12).prop_map(XStr)
}
fn task() -> impl Strategy<Value = Tid> {
    (1u32..16, 1u32..2000).prop_map(|(h, l)| Tid::task(h, l))
}
fn any_tid() -> impl Strategy<Value = Tid> {
    any::<i32>().prop_map(Tid)
}
fn pvmd() -> impl Strategy<Value = Tid> {
    (0u32..16).prop_map(Tid::pvmd)
}
fn int() -> impl Strategy<Value = Int> {
    any::<i32>().prop_map(|value| Int { value })
}
fn tid_arg() -> impl Strategy<Value = TidArg> {
    any_tid().prop_map(|tid| TidArg { tid })
}
fn tid_list() -> impl Strategy<Value = TidList> {
    vec(any_tid(), 0..6).prop_map(|tids| TidList { tids })
}
fn host_names() -> impl Strategy<Value = HostNames> {
    vec(xs(), 0..4).prop_map(|names| HostNames { names })
}
fn host_entry() -> impl Strategy<Value = HostEntry> {
    (pvmd(), xs(), xs(), any::<i32>(), any::<i32>()).prop_map(|(tid, name, arch, speed, dsig)| HostEntry {
        tid,
        name,
        arch,
        speed,
        dsig,
    })
}
fn add_host_ack() -> impl Strategy<Value = AddHostAck> {
    prop_oneof![
        vec(host_entry(), 0..3).prop_map(|hosts| AddHostAck {
            status: hosts.len() as i32,
            narches: Some(1),
            hosts
        }),
        (-36i32..0).prop_map(|status| AddHostAck {
            status,
            narches: None,
            hosts: vec![]
        }),
        (-36i32..0, any::<i32>()).prop_map(|(status, a)| AddHostAck {
            status,
            narches: Some(a),
            hosts: vec![]
        }),
    ]
}
fn status_list() -> impl Strategy<Value = StatusList> {
    prop_oneof![
        vec(prop_oneof![Just(0), Just(-6), Just(-22), Just(-28)], 1..4).prop_map(|results| StatusList {
            status: results.len() as i32,
            results
        }),
        (-36i32..0).prop_map(|status| StatusList {
            status,
            results: vec![]
        }),
    ]
}
fn tids_or_error() -> impl Strategy<Value = TidsOrError> {
    prop_oneof![
        vec(task(), 0..5).prop_map(TidsOrError::Tids),
        (i32::MIN..0).prop_map(TidsOrError::Error)
    ]
}
fn task_config() -> impl Strategy<Value = TaskConfig> {
    (
        (task(), any_tid(), any_tid(), any::<i32>(), any::<i32>(), any_tid()),
        (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>(), xs(), any_tid()),
    )
        .prop_map(
            |((tid, ptid, outtid, outctx, outtag, trctid), (trcctx, trctag, udpmax, dsig, addr, schedtid))| {
                TaskConfig {
                    tid,
                    ptid,
                    outtid,
                    outctx,
                    outtag,
                    trctid,
                    trcctx,
                    trctag,
                    udpmax,
                    dsig,
                    addr,
                    schedtid,
                }
            },
        )
}
fn spawn() -> impl Strategy<Value = Spawn> {
    (
        (group(), any::<i32>(), xs(), any::<i32>(), vec(xs(), 0..3)),
        (
            any_tid(),
            any::<i32>(),
            any::<i32>(),
            any_tid(),
            any::<i32>(),
            any::<i32>(),
            vec(xs(), 0..3),
        ),
    )
        .prop_map(
            |((file, flags, where_, count, argv), (outtid, outctx, outtag, trctid, trcctx, trctag, env))| Spawn {
                file,
                flags,
                where_,
                count,
                argv,
                outtid,
                outctx,
                outtag,
                trctid,
                trcctx,
                trctag,
                env,
            },
        )
}
fn exec() -> impl Strategy<Value = Exec> {
    let tail = option::of((any::<i32>(), any::<i32>(), prop::collection::vec(any::<u8>(), 0..12)));
    (spawn(), any_tid(), tail).prop_map(|(s, ptid, tail)| Exec {
        ptid,
        file: s.file,
        flags: s.flags,
        count: s.count,
        argv: s.argv,
        outtid: s.outtid,
        outctx: s.outctx,
        outtag: s.outtag,
        trctid: s.trctid,
        trcctx: s.trcctx,
        trctag: s.trctag,
        env: s.env,
        placement: tail.as_ref().map(|t| (t.0, t.1)),
        extra: tail.map(|t| t.2).unwrap_or_default(),
    })
}
fn task_entry() -> impl Strategy<Value = TaskEntry> {
    (task(), any_tid(), pvmd(), any::<i32>(), xs(), any::<i32>()).prop_map(|(tid, ptid, host, flag, a_out, pid)| {
        TaskEntry {
            tid,
            ptid,
            host,
            flag,
            a_out,
            pid,
        }
    })
}
fn notify() -> impl Strategy<Value = Notify> {
    let counted = (
        1i32..=2,
        any::<bool>(),
        any::<i32>(),
        any::<i32>(),
        vec(any_tid(), 0..4),
    )
        .prop_map(|(kind, cancel, ctx, tag, tids)| Notify {
            what: kind | if cancel { 256 } else { 0 },
            ctx,
            tag,
            count: tids.len() as i32,
            tids,
        });
    let other = (3i32..=9, any::<i32>(), any::<i32>(), any::<i32>(), vec(any_tid(), 0..3)).prop_map(
        |(what, ctx, tag, count, tids)| Notify {
            what,
            ctx,
            tag,
            count,
            tids,
        },
    );
    prop_oneof![counted, other]
}
fn embedded() -> impl Strategy<Value = EmbeddedMsg> {
    (
        (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()),
        (any_tid(), any_tid(), vec(vec(any::<u8>(), 0..9), 0..4)),
    )
        .prop_map(|((ctx, tag, wid, enc, crc), (src, dst, mut frags))| {
            // Trailing empty fragments are not representable: the unpack loop stops at `len`.
            while frags.last().is_some_and(|f| f.is_empty()) {
                frags.pop();
            }
            EmbeddedMsg {
                ctx,
                tag,
                wid,
                enc,
                crc,
                src,
                dst,
                frags,
            }
        })
}
fn db_request() -> impl Strategy<Value = DbRequest> {
    (1i32..=5, any_tid(), xs(), any::<i32>(), any::<i32>(), embedded()).prop_map(|(op, tid, class, index, flags, m)| {
        DbRequest {
            op,
            tid,
            class,
            index,
            flags,
            msg: (op == 1).then_some(m),
            noreset: (op == 5).then_some(vec![T2, Tid::task(3, 9)]),
        }
    })
}
fn db_reply() -> impl Strategy<Value = DbReply> {
    let entry = (100i32..1000, task(), 0i32..64).prop_map(|(index, owner, flags)| DbEntry { index, owner, flags });
    let class = (group(), vec(entry, 0..3)).prop_map(|(name, entries)| DbClass { name, entries });
    prop_oneof![
        any::<i32>().prop_map(DbReply::Status),
        (any::<i32>(), embedded()).prop_map(|(index, msg)| DbReply::Entry { index, msg }),
        (any::<i32>(), vec(class, 0..3)).prop_map(|(status, classes)| DbReply::Names { status, classes }),
    ]
}
fn ht_entry() -> impl Strategy<Value = HtEntry> {
    (any::<i32>(), xs(), xs(), xs(), any::<i32>(), any::<i32>(), any::<i32>()).prop_map(
        |(index, name, arch, addr, mtu, speed, dsig)| HtEntry {
            index,
            name,
            arch,
            addr,
            mtu,
            speed,
            dsig,
        },
    )
}
fn host_result() -> impl Strategy<Value = HostResult> {
    (any_tid(), xs()).prop_map(|(tid, result)| HostResult { tid, result })
}
fn output() -> impl Strategy<Value = OutputRecord> {
    let kind = prop_oneof![
        vec(any::<u8>(), 1..40).prop_map(OutputKind::Data),
        Just(OutputKind::Eof),
        any_tid().prop_map(|ptid| OutputKind::Spawn { ptid }),
        any_tid().prop_map(|ptid| OutputKind::New { ptid }),
    ];
    (task(), kind).prop_map(|(tid, kind)| OutputRecord { tid, kind })
}
fn gs_state() -> impl Strategy<Value = GsState> {
    let info = (
        any::<i32>(),
        group(),
        any::<i32>(),
        vec(any_tid(), 0..4),
        vec((0i32..100, task()), 0..3),
    )
        .prop_map(|(name_len, name, ntids, tids, hosts)| StaticInfo {
            name_len,
            name,
            ntids,
            tids,
            np_onhost: hosts.iter().map(|h| h.0).collect(),
            pcoord: hosts.iter().map(|h| h.1).collect(),
        });
    prop_oneof![
        (2i32..=3).prop_map(|state| GsState { state, info: None }),
        option::of(info).prop_map(|info| GsState { state: 1, info }),
    ]
}
fn gs_value() -> impl Strategy<Value = GsValue> {
    (-21i32..100, gs_state()).prop_map(|(value, state)| GsValue { value, state })
}
fn gs_tids() -> impl Strategy<Value = GsTids> {
    prop_oneof![
        (-21i32..0).prop_map(GsTids::Error),
        (vec(task(), 0..5), gs_state()).prop_map(|(tids, state)| GsTids::Tids { tids, state }),
    ]
}
fn gs_group() -> impl Strategy<Value = GsGroup> {
    group().prop_map(|group| GsGroup { group })
}
fn gs_group_arg() -> impl Strategy<Value = GsGroupArg> {
    (group(), any::<i32>()).prop_map(|(group, arg)| GsGroupArg { group, arg })
}
fn gs_list() -> impl Strategy<Value = GsList> {
    let g = (
        any::<i32>(),
        group(),
        any::<i32>(),
        any::<i32>(),
        vec(any_tid(), 0..4),
        vec(task(), 0..3),
        -3i32..1,
    )
        .prop_map(|(name_len, name, ntids, barrier_count, tids, btids, neg)| GsGroupInfo {
            name_len,
            name,
            ntids,
            barrier_count,
            barrier_reached: if btids.is_empty() { neg } else { btids.len() as i32 },
            tids,
            btids,
        });
    vec(g, 0..3).prop_map(|groups| GsList { groups })
}
fn opts() -> impl Strategy<Value = Vec<(i32, XStr)>> {
    vec((any::<i32>(), xs()), 0..4)
}

/// A body with a route (tag, ctx, src, dst, enc) that legacy would give it.
#[derive(Debug, Clone)]
struct Routed {
    header: MsgHeader,
    src: Tid,
    dst: Tid,
    body: Body,
}

fn route(tag: i32, ctx: i32, src: Tid, dst: Tid, body: Body) -> Routed {
    Routed {
        header: MsgHeader {
            enc: ENC_XDR,
            tag,
            ctx,
            wid: 3,
            crc: 0,
        },
        src,
        dst,
        body,
    }
}

const T1: Tid = Tid::task(1, 5);
const T2: Tid = Tid::task(2, 7);
const D: Tid = Tid::LOCAL_PVMD;
const M: Tid = Tid::pvmd(1);

fn tm_req(t: Tm, b: Body) -> Routed {
    route(t.code(), SYSCTX_TM, T1, D, b)
}
fn tm_rep(t: Tm, b: Body) -> Routed {
    route(t.code(), SYSCTX_TM, D, T1, b)
}
fn dm(d: Dm, b: Body) -> Routed {
    route(d.code(), 0, M, Tid::pvmd(2), b)
}
fn tc(t: Tc, b: Body) -> Routed {
    route(t.code(), SYSCTX_TC, T1, T2, b)
}
fn sm_tt(s: Sm, b: Body) -> Routed {
    route(s.code(), 0, T1, T2, b)
}
fn sm_to(s: Sm, b: Body) -> Routed {
    route(s.code(), 0, T2, D, b)
}
fn sm_from(s: Sm, b: Body) -> Routed {
    route(s.code(), 0, D, T2, b)
}
fn gs(g: Gs, b: Body) -> Routed {
    route(g.code(), SYSCTX_DG, T1, T2, b)
}

fn tm_bodies() -> impl Strategy<Value = Routed> {
    use Body as B;
    prop_oneof![
        (any::<i32>(), xs())
            .prop_map(|(version, path)| tm_req(Tm::Connect, B::TmConnect(ConnectReq { version, path }))),
        (any::<i32>(), any::<i32>(), xs())
            .prop_map(|(version, ack, path)| tm_rep(Tm::Connect, B::TmConnectAck(ConnectAck { version, ack, path }))),
        (any::<i32>(), any::<i32>(), option::of(xs()))
            .prop_map(|(pid, cookie, name)| tm_req(Tm::Conn2, B::TmConn2(Conn2Req { pid, cookie, name }))),
        (
            any::<i32>(),
            option::of(task_config()),
            option::of((any::<i32>(), any::<i32>()))
        )
            .prop_map(|(ack, config, ext)| {
                // The trailer only follows a full task configuration.
                let ext = config
                    .as_ref()
                    .and(ext)
                    .map(|(version, features)| Conn2Ext { version, features });
                tm_rep(Tm::Conn2, B::TmConn2Ack(Conn2Ack { ack, config, ext }))
            }),
        Just(tm_req(Tm::Exit, B::Empty)),
        host_names().prop_map(|x| tm_req(Tm::AddHost, B::TmAddHost(x))),
        add_host_ack().prop_map(|x| tm_rep(Tm::AddHost, B::TmAddHostAck(x))),
        host_names().prop_map(|x| tm_req(Tm::DelHost, B::TmDelHost(x))),
        status_list().prop_map(|x| tm_rep(Tm::DelHost, B::TmDelHostAck(x))),
        (any::<i32>(), vec(host_entry(), 0..3))
            .prop_map(|(narches, hosts)| tm_rep(Tm::Config, B::TmConfigAck(HostTable { narches, hosts }))),
        xs().prop_map(|name| tm_req(Tm::Mstat, B::TmMstat(Name { name }))),
        int().prop_map(|x| tm_rep(Tm::Mstat, B::TmMstatAck(x))),
        vec(any::<i32>(), 0..5).prop_map(|values| tm_req(Tm::Tickle, B::TmTickle(IntList { values }))),
        vec(any::<i32>(), 0..5).prop_map(|values| tm_rep(Tm::Tickle, B::TmTickleAck(IntList { values }))),
        spawn().prop_map(|x| tm_req(Tm::Spawn, B::TmSpawn(x))),
        tids_or_error().prop_map(|x| tm_rep(Tm::Spawn, B::TmSpawnAck(x))),
        tid_arg().prop_map(|x| tm_req(Tm::Pstat, B::TmPstat(x))),
        int().prop_map(|x| tm_rep(Tm::Pstat, B::TmPstatAck(x))),
        (any_tid(), any::<i32>()).prop_map(|(tid, signum)| tm_req(Tm::SendSig, B::TmSendSig(SendSig { tid, signum }))),
        tid_arg().prop_map(|x| tm_req(Tm::Task, B::TmTask(x))),
        (any::<i32>(), vec(task_entry(), 0..3))
            .prop_map(|(status, tasks)| tm_rep(Tm::Task, B::TmTaskAck(TaskList { status, tasks }))),
        tid_list().prop_map(|x| tm_req(Tm::Mca, B::TmMca(x))),
        notify().prop_map(|x| tm_req(Tm::Notify, B::TmNotify(x))),
        db_request().prop_map(|x| tm_req(Tm::Db, B::TmDb(x))),
        db_reply().prop_map(|x| tm_rep(Tm::Db, B::TmDbAck(x))),
        (any_tid(), option::of(host_entry()))
            .prop_map(|(old, master)| tm_rep(Tm::Sched, B::TmSchedAck(SchedAck { old, master }))),
        int().prop_map(|x| tm_req(Tm::Tasker, B::TmTasker(x))),
        int().prop_map(|x| tm_rep(Tm::Tasker, B::TmTaskerAck(x))),
        int().prop_map(|x| tm_req(Tm::Hoster, B::TmHoster(x))),
        int().prop_map(|x| tm_rep(Tm::Hoster, B::TmHosterAck(x))),
        (
            any::<i32>(),
            option::of((
                any::<i32>(),
                any::<i32>(),
                any::<i32>(),
                any::<i32>(),
                xs(),
                any::<i32>(),
                any::<i32>()
            ))
        )
            .prop_map(|(regme, a)| tm_req(
                Tm::Tracer,
                B::TmTracer(Tracer {
                    regme,
                    args: a.map(|(trcctx, trctag, outctx, outtag, tmask, tbuf, topt)| TracerArgs {
                        trcctx,
                        trctag,
                        outctx,
                        outtag,
                        tmask,
                        tbuf,
                        topt
                    })
                })
            )),
        int().prop_map(|x| tm_rep(Tm::Tracer, B::TmTracerAck(x))),
        tid_arg().prop_map(|x| tm_req(Tm::HostSync, B::TmHostSync(x))),
        (any::<i32>(), option::of((any::<i32>(), any::<i32>()))).prop_map(|(status, t)| tm_rep(
            Tm::HostSync,
            B::TmHostSyncAck(HostSyncAck {
                status,
                time: t.map(|(sec, usec)| TimeVal { sec, usec })
            })
        )),
        opts().prop_map(|entries| tm_req(Tm::SetOpt, B::TmSetOpt(OptList { entries }))),
        task_config().prop_map(|x| tm_rep(Tm::GetOpt, B::TmGetOptAck(x))),
        int().prop_map(|x| tm_req(Tm::Context, B::TmContext(x))),
        int().prop_map(|x| tm_rep(Tm::Context, B::TmContextAck(x))),
        int().prop_map(|x| tm_req(Tm::ShmConn, B::TmShmConn(x))),
    ]
}

fn dm_bodies() -> impl Strategy<Value = Routed> {
    use Body as B;
    prop_oneof![
        host_names().prop_map(|x| dm(Dm::Add, B::DmAdd(x))),
        add_host_ack().prop_map(|x| dm(Dm::AddAck, B::DmAddAck(x))),
        exec().prop_map(|x| dm(Dm::Exec, B::DmExec(x))),
        tids_or_error().prop_map(|x| dm(Dm::ExecAck, B::DmExecAck(x))),
        (any_tid(), any::<i32>()).prop_map(|(tid, signum)| dm(Dm::SendSig, B::DmSendSig(SendSig { tid, signum }))),
        (any::<i32>(), any::<i32>(), any::<i32>(), vec(ht_entry(), 0..3)).prop_map(
            |(serial, master, console, hosts)| dm(
                Dm::HtUpd,
                B::DmHtUpd(HtUpd {
                    serial,
                    master,
                    console,
                    hosts
                })
            )
        ),
        Just(dm(Dm::HtCommit, B::Empty)),
        opts().prop_map(|entries| dm(Dm::SlConf, B::DmSlConf(SlConf { entries }))),
        vec(host_result(), 0..3).prop_map(|results| dm(Dm::StartAck, B::DmStartAck(StartAck { results }))),
        tid_arg().prop_map(|x| dm(Dm::Task, B::DmTask(x))),
        vec(task_entry(), 0..3).prop_map(|tasks| dm(Dm::TaskAck, B::DmTaskAck(TaskRecords { tasks }))),
        host_names().prop_map(|x| dm(Dm::DelHost, B::DmDelHost(x))),
        status_list().prop_map(|x| dm(Dm::DelHostAck, B::DmDelHostAck(x))),
        output().prop_map(|x| dm(Dm::TaskOut, B::DmTaskOut(x))),
        tid_arg().prop_map(|x| dm(Dm::Pstat, B::DmPstat(x))),
        int().prop_map(|x| dm(Dm::PstatAck, B::DmPstatAck(x))),
        (any_tid(), vec(any_tid(), 0..4)).prop_map(|(gtid, tids)| dm(Dm::Mca, B::DmMca(Mca { gtid, tids }))),
        (any::<i32>(), any_tid()).prop_map(|(what, tid)| dm(Dm::Notify, B::DmNotify(DmNotify { what, tid }))),
        tid_arg().prop_map(|x| dm(Dm::NotifyAck, B::DmNotifyAck(x))),
        db_request().prop_map(|x| dm(Dm::Db, B::DmDb(x))),
        db_reply().prop_map(|x| dm(Dm::DbAck, B::DmDbAck(x))),
        tid_arg().prop_map(|x| dm(Dm::Reset, B::DmReset(x))),
        tid_arg().prop_map(|x| dm(Dm::ResetAck, B::DmResetAck(x))),
        (any::<i32>(), vec(any_tid(), 0..4))
            .prop_map(|(serial, hosts)| dm(Dm::HtDel, B::DmHtDel(HtDel { serial, hosts }))),
        (any::<i32>(), any::<i32>())
            .prop_map(|(sec, usec)| dm(Dm::HostSyncAck, B::DmHostSyncAck(TimeVal { sec, usec }))),
    ]
}

fn tc_sm_bodies() -> impl Strategy<Value = Routed> {
    use Body as B;
    let st_host =
        (any_tid(), xs(), xs(), xs(), xs(), xs()).prop_map(|(tid, sopts, login, command, win_command, vmid)| {
            StHostEntry {
                tid,
                sopts,
                login,
                command,
                win_command,
                vmid,
            }
        });
    let st_task = (
        (any_tid(), any::<i32>(), xs(), vec(xs(), 0..3), vec(xs(), 0..3)),
        (any::<i32>(), any::<i32>(), any::<i32>()),
    )
        .prop_map(|((tid, flags, path, argv, env), (instance, hosttotal, outof))| StTask {
            tid,
            flags,
            path,
            argv,
            env,
            instance,
            hosttotal,
            outof,
        });
    prop_oneof![
        (any::<i32>(), xs(), route_ext())
            .prop_map(|(version, path, ext)| tc(Tc::ConReq, B::TcConReq(RouteReq { version, path, ext }))),
        (any::<i32>(), any::<i32>(), xs(), route_ext()).prop_map(|(version, ack, path, ext)| tc(
            Tc::ConAck,
            B::TcConAck(RouteAck {
                version,
                ack,
                path,
                ext
            })
        )),
        tid_arg().prop_map(|x| tc(Tc::TaskExit, B::TcTaskExit(x))),
        Just(tc(Tc::Noop, B::Empty)),
        (
            (
                any_tid(),
                any::<i32>(),
                any::<i32>(),
                any_tid(),
                any::<i32>(),
                any::<i32>()
            ),
            (xs(), any::<i32>(), any::<i32>())
        )
            .prop_map(
                |((trctid, trcctx, trctag, outtid, outctx, outtag), (tmask, tbuf, topt))| tc(
                    Tc::SetTrace,
                    B::TcSetTrace(SetTrace {
                        trctid,
                        trcctx,
                        trctag,
                        outtid,
                        outctx,
                        outtag,
                        tmask,
                        tbuf,
                        topt
                    })
                )
            ),
        xs().prop_map(|name| tc(Tc::SetTmask, B::TcSetTmask(Name { name }))),
        int().prop_map(|x| tc(Tc::SetTrcBuf, B::TcSetTrcBuf(x))),
        int().prop_map(|x| tc(Tc::SetTrcOpt, B::TcSetTrcOpt(x))),
        tid_list().prop_map(|x| tc(Tc::Siblings, B::TcSiblings(x))),
        output().prop_map(|x| route(Tc::Output.code(), SYSCTX_TC, D, T1, B::TcOutput(x))),
        tid_arg().prop_map(|x| route(Tc::OutputX.code(), SYSCTX_TC, D, T1, B::TcOutputX(x))),
        spawn().prop_map(|x| sm_tt(Sm::Spawn, B::SmSpawn(x))),
        tids_or_error().prop_map(|x| sm_tt(Sm::Spawn, B::SmSpawnAck(x))),
        exec().prop_map(|x| sm_to(Sm::Exec, B::SmExec(x))),
        tids_or_error().prop_map(|x| sm_from(Sm::ExecAck, B::SmExecAck(x))),
        tid_arg().prop_map(|x| sm_tt(Sm::Task, B::SmTask(x))),
        // A reply with no task entries looks like the request (documented blind spot).
        (any::<i32>(), vec(task_entry(), 1..3))
            .prop_map(|(status, tasks)| sm_tt(Sm::Task, B::SmTaskAck(TaskList { status, tasks }))),
        Just(sm_tt(Sm::Config, B::Empty)),
        (any::<i32>(), vec(host_entry(), 0..3))
            .prop_map(|(narches, hosts)| sm_tt(Sm::Config, B::SmConfigAck(HostTable { narches, hosts }))),
        host_names().prop_map(|x| sm_tt(Sm::AddHost, B::SmAddHost(x))),
        add_host_ack()
            .prop_filter("a bare count is ambiguous with an empty request", |a| a
                .narches
                .is_some())
            .prop_map(|x| sm_tt(Sm::AddHost, B::SmAddHostAck(x))),
        host_names().prop_map(|x| sm_tt(Sm::DelHost, B::SmDelHost(x))),
        status_list().prop_map(|x| sm_tt(Sm::DelHost, B::SmDelHostAck(x))),
        host_names().prop_map(|x| sm_to(Sm::Add, B::SmAdd(x))),
        add_host_ack().prop_map(|x| sm_from(Sm::AddAck, B::SmAddAck(x))),
        notify().prop_map(|x| sm_tt(Sm::Notify, B::SmNotify(x))),
        (
            any_tid(),
            option::of((any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()))
        )
            .prop_map(|(tid, s)| sm_from(
                Sm::TaskX,
                B::SmTaskX(TaskX {
                    tid,
                    stats: s.map(|(status, a, b, c, d)| TaskStats {
                        status,
                        utime: (a, b),
                        stime: (c, d)
                    })
                })
            )),
        tid_arg().prop_map(|x| sm_from(Sm::HostX, B::SmHostX(x))),
        tid_arg().prop_map(|x| sm_to(Sm::Handoff, B::SmHandoff(x))),
        Just(sm_tt(Sm::Sched, B::Empty)),
        (any_tid(), option::of(host_entry()))
            .prop_map(|(old, master)| sm_tt(Sm::Sched, B::SmSchedAck(SchedAck { old, master }))),
        vec(st_host, 0..3).prop_map(|hosts| sm_from(Sm::StHost, B::SmStHost(StHost { hosts }))),
        vec(host_result(), 0..3).prop_map(|results| sm_to(Sm::StHostAck, B::SmStHostAck(StartAck { results }))),
        st_task.prop_map(|x| sm_from(Sm::StTask, B::SmStTask(x))),
    ]
}

fn gs_bodies() -> impl Strategy<Value = Routed> {
    use Body as B;
    let reply_int = || (-21i32..100).prop_map(|value| Int { value });
    prop_oneof![
        Just(gs(Gs::Die, B::Empty)),
        Just(gs(Gs::Gsls, B::Empty)),
        gs_group().prop_map(|x| gs(Gs::Join, B::GsJoin(x))),
        reply_int().prop_map(|x| gs(Gs::Join, B::GsJoinAck(x))),
        gs_group().prop_map(|x| gs(Gs::Leave, B::GsLeave(x))),
        reply_int().prop_map(|x| gs(Gs::Leave, B::GsLeaveAck(x))),
        gs_group_arg().prop_map(|x| gs(Gs::Barrier, B::GsBarrier(x))),
        reply_int().prop_map(|x| gs(Gs::Barrier, B::GsBarrierAck(x))),
        gs_group_arg().prop_map(|x| gs(Gs::BarrierV, B::GsBarrierV(x))),
        reply_int().prop_map(|x| gs(Gs::BarrierV, B::GsBarrierVAck(x))),
        gs_group().prop_map(|x| gs(Gs::Bcast, B::GsBcast(x))),
        gs_tids().prop_map(|x| gs(Gs::Bcast, B::GsBcastAck(x))),
        gs_group().prop_map(|x| gs(Gs::TidList, B::GsTidList(x))),
        gs_tids().prop_map(|x| gs(Gs::TidList, B::GsTidListAck(x))),
        gs_group_arg().prop_map(|x| gs(Gs::GetInst, B::GsGetInst(x))),
        gs_value().prop_map(|x| gs(Gs::GetInst, B::GsGetInstAck(x))),
        gs_group_arg().prop_map(|x| gs(Gs::GetTid, B::GsGetTid(x))),
        gs_value().prop_map(|x| gs(Gs::GetTid, B::GsGetTidAck(x))),
        gs_group().prop_map(|x| gs(Gs::Gsize, B::GsGsize(x))),
        gs_value().prop_map(|x| gs(Gs::Gsize, B::GsGsizeAck(x))),
        gs_list().prop_map(|x| gs(Gs::Gsls, B::GsGslsAck(x))),
        tid_arg().prop_map(|x| route(Gs::DeadTid.code(), SYSCTX_DG, D, T1, B::GsDeadTid(x))),
        gs_group_arg().prop_map(|x| gs(Gs::StaticGroup, B::GsStaticGroup(x))),
        prop_oneof![
            (-21i32..0).prop_map(GsStaticAck::Error),
            gs_value().prop_map(GsStaticAck::Formed)
        ]
        .prop_map(|x| gs(Gs::StaticGroup, B::GsStaticGroupAck(x))),
        gs_group_arg().prop_map(|x| gs(Gs::HostChar, B::GsHostChar(x))),
        (0i32..16, 0i32..100, task(), gs_state()).prop_map(|(nhosts, nmem, coord, state)| gs(
            Gs::HostChar,
            B::GsHostCharAck(GsHostChar {
                nhosts,
                nmem,
                coord,
                state
            })
        )),
        gs_group().prop_map(|x| gs(Gs::HostCharV, B::GsHostCharV(x))),
        (vec((0i32..100, task()), 0..4), gs_state()).prop_map(|(h, state)| gs(
            Gs::HostCharV,
            B::GsHostCharVAck(GsHostCharV {
                nmem: h.iter().map(|x| x.0).collect(),
                coord: h.iter().map(|x| x.1).collect(),
                state
            })
        )),
    ]
}

fn other_bodies() -> impl Strategy<Value = Routed> {
    use Body as B;
    prop_oneof![
        task().prop_map(|tid| route(99, 0, D, T1, B::NotifyTid(TidArg { tid }))),
        vec((1u32..16).prop_map(|h| Tid::task(h, 0)), 1..4).prop_map(|tids| route(
            99,
            0,
            D,
            T1,
            B::NotifyHostAdd(TidList { tids })
        )),
        output().prop_map(|x| route(42, 7, M, T1, B::TaskOutput(x))),
        vec(any::<u8>(), 0..40).prop_map(|bytes| route(7, 0, T1, T2, B::User { bytes })),
        vec(any::<u8>(), 0..40).prop_map(|bytes| {
            let mut r = route(8, 0, D, T1, B::User { bytes });
            r.header.enc = DSIG_X86_64;
            r
        }),
        (0x100i32..0x200, vec(any::<u8>(), 0..40)).prop_map(|(c, bytes)| {
            let tag = Tm::Connect.code() - 1 + c;
            route(tag, SYSCTX_TM, T1, D, B::Unknown { tag, bytes })
        }),
    ]
}

fn check(r: &Routed) -> Result<(), TestCaseError> {
    let bytes = r.body.emit();
    let back = decode(&r.header, r.src, r.dst, &bytes).map_err(|e| TestCaseError::fail(format!("{e}: {}", r.body)))?;
    prop_assert_eq!(&back, &r.body);
    prop_assert_eq!(back.emit(), bytes.clone());
    // Pad ranges lie inside the body and hold zeros.
    for p in r.body.padding() {
        prop_assert!(p.end <= bytes.len() && bytes[p].iter().all(|&b| b == 0));
    }
    let s = r.body.to_string();
    prop_assert!(!s.contains('\n'));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tm_round_trip(r in tm_bodies()) { check(&r)?; }

    #[test]
    fn dm_round_trip(r in dm_bodies()) { check(&r)?; }

    #[test]
    fn tc_sm_round_trip(r in tc_sm_bodies()) { check(&r)?; }

    #[test]
    fn gs_round_trip(r in gs_bodies()) { check(&r)?; }

    #[test]
    fn notify_output_user_round_trip(r in other_bodies()) { check(&r)?; }

    /// Arbitrary bytes under any code: never a panic; whatever decodes re-emits to the masked input.
    #[test]
    fn arbitrary_bytes_are_total(
        code in prop_oneof![0x8001_0001u32..=0x8001_0019u32, 0x8002_0001u32..=0x8002_001du32,
                            0x8003_0001u32..=0x8003_000cu32, 0x8004_0001u32..=0x8004_0011u32, 0u32..=16u32],
        ctx in prop_oneof![Just(SYSCTX_DG), Just(0), Just(SYSCTX_TM)],
        dir in 0usize..4,
        ints in vec(prop_oneof![0i32..8, any::<i32>(), Just(-1), 0x40000i32..0x40010], 0..24),
        tail in vec(any::<u8>(), 0..4),
    ) {
        let (src, dst) = [(T1, D), (D, T1), (M, Tid::pvmd(2)), (T1, T2)][dir];
        let mut body: Vec<u8> = ints.iter().flat_map(|i| i.to_be_bytes()).collect();
        body.extend_from_slice(&tail);
        let header = MsgHeader { enc: ENC_XDR, tag: code as i32, ctx, wid: 0, crc: 0 };
        if let Ok(b) = decode(&header, src, dst, &body) {
            prop_assert_eq!(b.emit(), mask_padding(&header, src, dst, &body));
            let _ = b.to_string();
        }
    }
}

// ---- truncation of captured bodies -----------------------------------------------------------

/// (header, src, dst, body) of every captured message.
fn captured() -> Vec<(MsgHeader, Tid, Tid, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().map_or(true, |x| x != "hex") {
            continue;
        }
        let dd = path.file_name().unwrap().to_string_lossy().starts_with("dd_");
        for f in hexvec::parse(&std::fs::read_to_string(&path).unwrap()).unwrap().frames {
            let (src, dst, flags) = if dd {
                let h = DatagramHeader::parse(&f.bytes).unwrap();
                (h.src, h.dst, h.flags)
            } else {
                let h = StreamFragHeader::parse(&f.bytes, 1 << 20).unwrap();
                (h.src, h.dst, h.flags)
            };
            if f.bytes.len() < 48 || !flags.contains(FragFlags::SOM) {
                continue;
            }
            let header = MsgHeader::parse(&f.bytes[16..]).unwrap();
            out.push((header, src, dst, f.bytes[48..].to_vec()));
        }
    }
    out
}

#[test]
fn truncated_captured_bodies_never_panic() {
    let all = captured();
    assert_eq!(all.len(), 57);
    let mut errors = 0;
    let mut shorter_ok = 0;
    for (h, src, dst, body) in &all {
        let full = decode(h, *src, *dst, body).unwrap();
        for n in 0..body.len() {
            let cut = &body[..n];
            match decode(h, *src, *dst, cut) {
                Err(e) => {
                    errors += 1;
                    assert!(e.offset <= n, "{e} beyond {n} bytes");
                }
                Ok(b) => {
                    shorter_ok += 1;
                    // Only formats with optional or repeated tails (and untyped bodies) may
                    // accept a prefix, and what they accept re-emits exactly.
                    assert_eq!(b.emit(), mask_padding(h, *src, *dst, cut), "{full} cut to {n}: {b}");
                }
            }
        }
    }
    assert!(errors > 1000, "{errors} truncations rejected");
    assert!(shorter_ok > 0, "user bodies accept any prefix");
}

#[test]
fn corrupted_counts_are_errors_not_allocations() {
    // A spawn request whose nargs claims two billion strings.
    let mut b = Vec::new();
    b.extend_from_slice(&[0, 0, 0, 2, b'a', 0, 0, 0]); // file "a"
    b.extend_from_slice(&0i32.to_be_bytes()); // flags
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // where ""
    b.extend_from_slice(&1i32.to_be_bytes()); // count
    b.extend_from_slice(&0x7fff_ffffi32.to_be_bytes()); // nargs
    let h = MsgHeader {
        enc: ENC_XDR,
        tag: Tm::Spawn.code(),
        ctx: SYSCTX_TM,
        wid: 1,
        crc: 0,
    };
    let e = decode(&h, T1, D, &b).unwrap_err();
    assert_eq!((e.field, e.offset), ("nargs", 24));
    // A mailbox PUT whose embedded message claims more bytes than follow.
    let put = Body::TmDb(DbRequest {
        op: 1,
        tid: T1,
        class: "c".into(),
        index: -1,
        flags: 0,
        msg: Some(EmbeddedMsg {
            frags: vec![vec![1, 2, 3]],
            ..Default::default()
        }),
        noreset: None,
    });
    let mut bytes = put.emit();
    let at = 4 + 4 + 8 + 4 + 4; // op, tid, class, index, flags
    bytes[at..at + 4].copy_from_slice(&1000i32.to_be_bytes());
    let h = MsgHeader {
        tag: Tm::Db.code(),
        ..h
    };
    let e = decode(&h, T1, D, &bytes).unwrap_err();
    assert_eq!((e.field, e.offset), ("msg len", at));
}
