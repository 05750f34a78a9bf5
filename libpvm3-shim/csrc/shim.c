/* C half of the Rust libpvm3: what Rust cannot declare with the legacy ABI.
 *
 * - Data objects with the sizes and initial values of libpvm3.so.3 (3.4.6, amd64), so that
 *   programs linked against the legacy library get the copy relocations they expect.
 *   The Rust code reads and writes the ones that carry meaning (pvm_errno, pvmautoerr,
 *   pvmmytid, ...); the trace tables are zero-filled placeholders of the right size.
 * - Variadic functions: pvm_packf/pvm_unpackf (and the va_list forms) walk the format here and
 *   call the exported pvm_pk and pvm_upk functions; pvmlogprintf formats here and hands the text
 *   to Rust.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- data objects (nm -DS of the legacy library gives the sizes) ---- */
char *pvm_errlist[37] = {
    "Error 0", "Error 1", "Bad parameter", "Parameter mismatch", "Value too large",
    "End of buffer", "No such host", "No such file", "Permission denied", "Error 9",
    "Malloc failed", "Error 11", "Can't decode message", "Error 13",
    "Can't contact local daemon", "No current buffer", "No such buffer", "Null group name",
    "Already in group", "No such group", "Not in group", "No such instance", "Host failed",
    "No parent task", "Not implemented", "Pvmd system error", "Version mismatch",
    "Out of resources", "Duplicate host", "Can't start pvmd", "Already in progress",
    "No such task", "Not Found", "Already Exists", "Hoster must run on master host",
    "Spawning parent set PvmNoParent", "Master Host IP Address is Loopback! (See pvm3/Readme)",
};
int pvm_nerr = 37;
int pvm_errno;
void *pvm_inprecv;
int pvm_useruid = -1;
int pvmautoerr = 1;
char pvmctrc[0x44];
int pvmdebmask;
int pvmfrgsiz = 4080;
void *pvmmboxclasses;
void *pvmmidh;
int pvmmidhsiz;
int pvmmyctx;
int pvmmydsig;
int pvmmyptid = -1;
char *pvmmytaskname;
int pvmmytid = -1;
int pvmmyupid = -1;
int pvmnoreset;
int pvmnoresetindex = -1;
int pvmnsibs = -1;
void *pvmrbuf;
int pvmrescode;
int pvmrouteopt = 2;
void *pvmrxlist;
void *pvmsbuf;
int pvmschedtid;
int pvmshowtaskid = 1;
int *pvmsibtids;
/* Trace event names and data-id descriptions, as the legacy tables hold them (the console
 * reads them to name trace events); 109 x 56 and 123 x 16 bytes like the legacy objects. */
struct pvmtevinfo_entry {
    char *name;
    int desc_status;
    struct { long tv_sec, tv_usec; } mark, total;
    int count;
};
struct pvmtevinfo_entry pvmtevinfo[109] = {
    {.name = "addhosts"},
    {.name = "barrier"},
    {.name = "bcast"},
    {.name = "bufinfo"},
    {.name = "config"},
    {.name = "delete"},
    {.name = "delhosts"},
    {.name = "exit"},
    {.name = "freebuf"},
    {.name = "getfds"},
    {.name = "getinst"},
    {.name = "getopt"},
    {.name = "getrbuf"},
    {.name = "getsbuf"},
    {.name = "gettid"},
    {.name = "gsize"},
    {.name = "halt"},
    {.name = "initsend"},
    {.name = "insert"},
    {.name = "joingroup"},
    {.name = "kill"},
    {.name = "lookup"},
    {.name = "lvgroup"},
    {.name = "mcast"},
    {.name = "mkbuf"},
    {.name = "mstat"},
    {.name = "mytid"},
    {.name = "notify"},
    {.name = "nrecv"},
    {.name = "parent"},
    {.name = "perror"},
    {.name = "pkbyte"},
    {.name = "pkcplx"},
    {.name = "pkdcplx"},
    {.name = "pkdouble"},
    {.name = "pkfloat"},
    {.name = "pkint"},
    {.name = "pkuint"},
    {.name = "pklong"},
    {.name = "pkulong"},
    {.name = "pkshort"},
    {.name = "pkushort"},
    {.name = "pkstr"},
    {.name = "probe"},
    {.name = "pstat"},
    {.name = "recv"},
    {.name = "recvf"},
    {.name = "send"},
    {.name = "sendsig"},
    {.name = "setopt"},
    {.name = "setrbuf"},
    {.name = "setsbuf"},
    {.name = "spawn"},
    {.name = "start_pvmd"},
    {.name = "tasks"},
    {.name = "tickle"},
    {.name = "tidtohost"},
    {.name = "trecv"},
    {.name = "upkbyte"},
    {.name = "upkcplx"},
    {.name = "upkdcplx"},
    {.name = "upkdouble"},
    {.name = "upkfloat"},
    {.name = "upkint"},
    {.name = "upkuint"},
    {.name = "upklong"},
    {.name = "upkulong"},
    {.name = "upkshort"},
    {.name = "upkushort"},
    {.name = "upkstr"},
    {.name = "version"},
    {.name = "reg_hoster"},
    {.name = "reg_rm"},
    {.name = "reg_tasker"},
    {.name = "reg_tracer"},
    {.name = "newtask"},
    {.name = "endtask"},
    {.name = "spntask"},
    {.name = "archcode"},
    {.name = "catchout"},
    {.name = "getmwid"},
    {.name = "gettmask"},
    {.name = "hostsync"},
    {.name = "packf"},
    {.name = "precv"},
    {.name = "psend"},
    {.name = "reduce"},
    {.name = "setmwid"},
    {.name = "settmask"},
    {.name = "unpackf"},
    {.name = "gather"},
    {.name = "scatter"},
    {.name = "putinfo"},
    {.name = "getinfo"},
    {.name = "delinfo"},
    {.name = "getmboxinfo"},
    {.name = "newcontext"},
    {.name = "freecontext"},
    {.name = "setcontext"},
    {.name = "getcontext"},
    {.name = "siblings"},
    {.name = "getminfo"},
    {.name = "setminfo"},
    {.name = "addmhf"},
    {.name = "delmhf"},
    {.name = "mhf_invoke"},
    {.name = "timing"},
    {.name = "profiling"},
    {.name = "user_defined"}
};
struct pvmtevdid_entry {
    char *id;
    char *desc;
};
struct pvmtevdid_entry pvmtevdidlist[123] = {
    {"AN", "PVM Architecture Name"},
    {"AC", "PVM Architecture Code"},
    {"AS", "Argument Strings (Argc/Argv)"},
    {"BF", "Block Flag"},
    {"CC", "Condition Code"},
    {"CN", "Class Name"},
    {"CI", "Class Index"},
    {"CF", "Class Flags"},
    {"CD", "Class Data"},
    {"CR", "Returned Class Data"},
    {"CL", "Returned Class Names"},
    {"CDA", "Collective Data Address"},
    {"CDT", "Collective Data Type"},
    {"CDX", "Collective Data"},
    {"CDC", "Collective Count"},
    {"CGI", "Collective Group Result Instance"},
    {"CRF", "Collective Reduce Function"},
    {"CXC", "Current Message Context"},
    {"CXF", "Freed Message Context"},
    {"CXN", "New Message Context"},
    {"CXS", "Set Message Context"},
    {"ERI", "PVM Error Identifier"},
    {"ERR", "PVM Error String"},
    {"FDS", "File Descriptors"},
    {"FP", "File Pointer"},
    {"GN", "Group Name"},
    {"GI", "Group Instance Number"},
    {"GT", "Group Task ID"},
    {"GS", "Group Size"},
    {"GBC", "Group Barrier Count"},
    {"HN", "Host Name"},
    {"HNL", "Host Name List"},
    {"HNA", "Host Name Alias"},
    {"HPT", "Host PVMD Task ID"},
    {"HA", "Host Architecture"},
    {"HSP", "Host Speed"},
    {"HIS", "Host Information Structures"},
    {"HCS", "Host Clock Seconds"},
    {"HCU", "Host Clock Microseconds"},
    {"HDS", "Host Delta Seconds"},
    {"HDU", "Host Delta Microseconds"},
    {"HS", "Host Status"},
    {"INB", "Info Number of Message Bytes"},
    {"IMC", "Info Message Code"},
    {"IST", "Info Message Source Task"},
    {"MC", "Message Code"},
    {"MCX", "Message Context"},
    {"MB", "Message Buffer"},
    {"MNB", "Message Number of Bytes"},
    {"SRC", "Message Source Task ID"},
    {"DST", "Message Destination Task ID"},
    {"MDL", "Message Destination Task ID List"},
    {"MTS", "Message Timeout Seconds"},
    {"MTU", "Message Timeout Microseconds"},
    {"MRF", "Message Receive Function"},
    {"MRB", "Message Receive Buffer"},
    {"MSB", "Message Send Buffer"},
    {"ME", "Message Encoding"},
    {"MHI", "Message Handler Index"},
    {"AST", "Actual Message Sender Task ID"},
    {"AMC", "Actual Message Code"},
    {"AML", "Actual Message Length"},
    {"NE", "Notify Event ID"},
    {"NMC", "Notify Message Code"},
    {"NCT", "Notify Count"},
    {"NTL", "Notify Task ID List"},
    {"NH", "Number of Hosts"},
    {"NA", "Number of Architectures"},
    {"OPT", "PVM Option ID"},
    {"OPV", "PVM Option Value"},
    {"OS", "Output String"},
    {"PDA", "Pack Data Address"},
    {"PDT", "Pack Data Type"},
    {"PC", "Pack Count"},
    {"PSD", "Pack Stride"},
    {"PSG", "Pack String"},
    {"PF", "Pack Format"},
    {"PRF", "Profiling Count"},
    {"RST", "Receive Msg Source Task / Wildcard"},
    {"RMC", "Receive Msg Code / Wildcard"},
    {"RCX", "Receive Msg Context"},
    {"SN", "Signal Number"},
    {"SE", "Spawn Executable File"},
    {"SF", "Spawn Flags"},
    {"SW", "Spawn Where"},
    {"SC", "Spawn Count"},
    {"STL", "Spawned Task ID List"},
    {"SIB", "Sibling Task ID List"},
    {"TID", "Task ID"},
    {"PT", "Parent Task ID"},
    {"MT", "My Task ID"},
    {"TF", "Task Flags"},
    {"TN", "Task Name"},
    {"PID", "Task Process ID"},
    {"TT", "Target Task ID"},
    {"TW", "Tasks Where"},
    {"TIS", "Task Information Structures"},
    {"TNT", "Task Info - Number of Tasks"},
    {"TST", "Task Status"},
    {"TUS", "Task User Usage Seconds"},
    {"TUU", "Task User Usage Microseconds"},
    {"TSS", "Task System Usage Seconds"},
    {"TSU", "Task System Usage Microseconds"},
    {"TES", "Task Exit Status"},
    {"TA", "Tickle Arguments"},
    {"TR", "Tickle Responses"},
    {"TS", "Time Seconds"},
    {"TU", "Time Microseconds"},
    {"TGS", "Timing Seconds"},
    {"TGU", "Timing Microseconds"},
    {"TMW", "Trace Mask Who"},
    {"TM", "Trace Mask"},
    {"TRC", "Tracer Message Trace Context"},
    {"TRT", "Tracer Message Trace Tag"},
    {"TRX", "Tracer Message Output Context"},
    {"TRO", "Tracer Message Output Tag"},
    {"TRM", "Tracer Trace Mask"},
    {"TRB", "Tracer Trace Buffering"},
    {"TRL", "Tracer Trace Options"},
    {"VER", "PVM Version"},
    {"VCT", "Trace Event Count"},
    {"VID", "Trace Event ID"},
    {"WID", "Wait Identifier Number"}
};
int pvmtoplvl = 1;
char pvmtrc[0x44];
void *pvmtrccodef;
int pvmtrcdesc;
void *pvmtrcmp;
int pvmtrcsavekind;
int pvmtrcsbf;
int pvmtrcsbfsave;
int pvmtrctmp;
char pvmtrcztv[16];
int pvmudpmtu = 4080;
void *waitlist;

/* ---- Rust side ---- */
int pvm_initsend(int);
int pvm_pkbyte(char *, int, int);
int pvm_pkshort(short *, int, int);
int pvm_pkint(int *, int, int);
int pvm_pklong(long *, int, int);
int pvm_pkfloat(float *, int, int);
int pvm_pkdouble(double *, int, int);
int pvm_pkcplx(float *, int, int);
int pvm_pkdcplx(double *, int, int);
int pvm_pkstr(char *);
int pvm_pkushort(unsigned short *, int, int);
int pvm_pkuint(unsigned int *, int, int);
int pvm_pkulong(unsigned long *, int, int);
int pvm_upkbyte(char *, int, int);
int pvm_upkshort(short *, int, int);
int pvm_upkint(int *, int, int);
int pvm_upklong(long *, int, int);
int pvm_upkfloat(float *, int, int);
int pvm_upkdouble(double *, int, int);
int pvm_upkcplx(float *, int, int);
int pvm_upkdcplx(double *, int, int);
int pvm_upkstr(char *);
int pvm_upkushort(unsigned short *, int, int);
int pvm_upkuint(unsigned int *, int, int);
int pvm_upkulong(unsigned long *, int, int);
void pvmshim_log_text(const char *text);
int pvmshim_lpvmerr(const char *fname, int code);

/* Conversions of the packf format: %[+][count|*][.stride|*][h|l|u...]{c,d,i,f,x,s}. */
enum { K_BYTE, K_SHORT, K_INT, K_LONG, K_FLOAT, K_DOUBLE, K_CPLX, K_DCPLX, K_STR, K_NONE };

struct conv {
    int init;     /* '+' seen: first argument is an encoding for pvm_initsend */
    int count;
    int stride;
    int isarray;  /* a count was given: the argument is a pointer */
    int kind;
    int isunsigned;
};

static const char *parse_conv(const char *f, struct conv *c, va_list *ap)
{
    int longs = 0, shorts = 0;
    memset(c, 0, sizeof *c);
    c->count = 1;
    c->stride = 1;
    if (*f == '+') {
        c->init = 1;
        f++;
        /* "%+" alone: just pvm_initsend() with the next argument */
        if (!*f || *f == ' ' || *f == '\t' || *f == '%') {
            c->kind = K_NONE;
            return f;
        }
    }
    if (*f == '*') {
        c->count = va_arg(*ap, int);
        c->isarray = 1;
        f++;
    } else if (*f >= '0' && *f <= '9') {
        c->count = 0;
        while (*f >= '0' && *f <= '9')
            c->count = c->count * 10 + (*f++ - '0');
        c->isarray = 1;
    }
    if (*f == '.') {
        f++;
        if (*f == '*') {
            c->stride = va_arg(*ap, int);
            f++;
        } else {
            c->stride = 0;
            while (*f >= '0' && *f <= '9')
                c->stride = c->stride * 10 + (*f++ - '0');
        }
    }
    for (;; f++) {
        if (*f == 'l')
            longs++;
        else if (*f == 'h')
            shorts++;
        else if (*f == 'u')
            c->isunsigned = 1;
        else
            break;
    }
    switch (*f) {
    case 'c': c->kind = K_BYTE; break;
    case 'd': case 'i': c->kind = shorts ? K_SHORT : longs ? K_LONG : K_INT; break;
    case 'f': c->kind = longs ? K_DOUBLE : K_FLOAT; break;
    case 'x': c->kind = longs ? K_DCPLX : K_CPLX; break;
    case 's': c->kind = K_STR; break;
    default: return 0;
    }
    return f + 1;
}

static int vpackf_body(const char *fmt, va_list ap0)
{
    va_list ap;
    struct conv c;
    int cc = 0, autoerr = pvmautoerr;
    if (!fmt)
        return -2;
    pvmautoerr = 0;
    va_copy(ap, ap0);
    while (*fmt) {
        if (*fmt++ != '%')
            continue;
        if (*fmt == '%') { fmt++; continue; }
        fmt = parse_conv(fmt, &c, &ap);
        if (!fmt) { cc = -2; break; }
        if (c.init) {
            pvmautoerr = autoerr;
            cc = pvm_initsend(va_arg(ap, int));
            pvmautoerr = 0;
            if (cc < 0) break;
        }
        if (c.kind == K_NONE)
            continue;
        if (c.isarray || c.kind == K_STR || c.kind == K_CPLX || c.kind == K_DCPLX) {
            void *p = va_arg(ap, void *);
            switch (c.kind) {
            case K_BYTE: cc = pvm_pkbyte(p, c.count, c.stride); break;
            case K_SHORT: cc = c.isunsigned ? pvm_pkushort(p, c.count, c.stride) : pvm_pkshort(p, c.count, c.stride); break;
            case K_INT: cc = c.isunsigned ? pvm_pkuint(p, c.count, c.stride) : pvm_pkint(p, c.count, c.stride); break;
            case K_LONG: cc = c.isunsigned ? pvm_pkulong(p, c.count, c.stride) : pvm_pklong(p, c.count, c.stride); break;
            case K_FLOAT: cc = pvm_pkfloat(p, c.count, c.stride); break;
            case K_DOUBLE: cc = pvm_pkdouble(p, c.count, c.stride); break;
            case K_CPLX: cc = pvm_pkcplx(p, c.count, c.stride); break;
            case K_DCPLX: cc = pvm_pkdcplx(p, c.count, c.stride); break;
            case K_STR: cc = pvm_pkstr(p); break;
            }
        } else {
            switch (c.kind) {
            case K_BYTE: { char v = (char)va_arg(ap, int); cc = pvm_pkbyte(&v, 1, 1); break; }
            case K_SHORT: { short v = (short)va_arg(ap, int); cc = pvm_pkshort(&v, 1, 1); break; }
            case K_INT: { int v = va_arg(ap, int); cc = pvm_pkint(&v, 1, 1); break; }
            case K_LONG: { long v = va_arg(ap, long); cc = pvm_pklong(&v, 1, 1); break; }
            case K_FLOAT: { float v = (float)va_arg(ap, double); cc = pvm_pkfloat(&v, 1, 1); break; }
            case K_DOUBLE: { double v = va_arg(ap, double); cc = pvm_pkdouble(&v, 1, 1); break; }
            default: break;
            }
        }
        if (cc < 0)
            break;
    }
    va_end(ap);
    pvmautoerr = autoerr;
    return cc < 0 ? cc : 0;
}

static int vunpackf_body(const char *fmt, va_list ap0)
{
    va_list ap;
    struct conv c;
    int cc = 0;
    if (!fmt)
        return -2;
    va_copy(ap, ap0);
    while (*fmt) {
        void *p;
        if (*fmt++ != '%')
            continue;
        if (*fmt == '%') { fmt++; continue; }
        fmt = parse_conv(fmt, &c, &ap);
        if (!fmt) { cc = -2; break; }
        if (c.kind == K_NONE) {
            (void)va_arg(ap, int);
            continue;
        }
        p = va_arg(ap, void *);
        switch (c.kind) {
        case K_BYTE: cc = pvm_upkbyte(p, c.count, c.stride); break;
        case K_SHORT: cc = c.isunsigned ? pvm_upkushort(p, c.count, c.stride) : pvm_upkshort(p, c.count, c.stride); break;
        case K_INT: cc = c.isunsigned ? pvm_upkuint(p, c.count, c.stride) : pvm_upkint(p, c.count, c.stride); break;
        case K_LONG: cc = c.isunsigned ? pvm_upkulong(p, c.count, c.stride) : pvm_upklong(p, c.count, c.stride); break;
        case K_FLOAT: cc = pvm_upkfloat(p, c.count, c.stride); break;
        case K_DOUBLE: cc = pvm_upkdouble(p, c.count, c.stride); break;
        case K_CPLX: cc = pvm_upkcplx(p, c.count, c.stride); break;
        case K_DCPLX: cc = pvm_upkdcplx(p, c.count, c.stride); break;
        case K_STR: cc = pvm_upkstr(p); break;
        }
        if (cc < 0)
            break;
    }
    va_end(ap);
    return cc < 0 ? cc : 0;
}

/* Trace records of pvm_packf/pvm_unpackf (tev.rs): the pk/upk calls inside are not traced. */
int pvmshim_tev_begin(int kind, const char *fmt);
void pvmshim_tev_end(int kind, int took, int cc);

/* Legacy packs and unpacks the conversions with its encoders directly: a failing one is
   reported once, by pvm_packf/pvm_unpackf, not also by the pvm_pk and pvm_upk calls made here
   (their PvmAutoErr messages are held back; pvm_initsend for %+ still reports, as in legacy). */
int pvm_vpackf(const char *fmt, va_list ap0)
{
    int took = pvmshim_tev_begin(83, fmt);
    int cc = vpackf_body(fmt, ap0);
    pvmshim_tev_end(83, took, cc);
    return cc;
}

int pvm_vunpackf(const char *fmt, va_list ap0)
{
    int took = pvmshim_tev_begin(89, fmt);
    int autoerr = pvmautoerr, cc;
    pvmautoerr = 0;
    cc = vunpackf_body(fmt, ap0);
    pvmautoerr = autoerr;
    pvmshim_tev_end(89, took, cc);
    return cc;
}

int pvm_packf(const char *fmt, ...)
{
    va_list ap;
    int cc;
    va_start(ap, fmt);
    cc = pvm_vpackf(fmt, ap);
    va_end(ap);
    return cc < 0 ? pvmshim_lpvmerr("pvm_packf", cc) : cc;
}

int pvm_unpackf(const char *fmt, ...)
{
    va_list ap;
    int cc;
    va_start(ap, fmt);
    cc = pvm_vunpackf(fmt, ap);
    va_end(ap);
    return cc < 0 ? pvmshim_lpvmerr("pvm_unpackf", cc) : cc;
}

int vpvmlogprintf(const char *fmt, va_list ap)
{
    char buf[4096];
    int n = vsnprintf(buf, sizeof buf, fmt ? fmt : "", ap);
    pvmshim_log_text(buf);
    return n;
}

int pvmlogprintf(const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vpvmlogprintf(fmt, ap);
    va_end(ap);
    return n;
}
