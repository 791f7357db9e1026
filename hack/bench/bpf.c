// BPF measurements for hack/bench.sh, with no libbpf and no clang (it builds this with cc):
//
//   nk-bench-bpf attach tcx_ingress|netkit_primary|netkit_peer [--spaced] IFINDEX...
//       The floor of a pod start, bare: for each IFINDEX, one BPF_LINK_CREATE of a
//       two-instruction program, then the close (release) of that live link. Prints
//       "ATTACH_US RELEASE_US" per line. Both wait for an RCU grace period, and how long
//       one takes depends on when it is asked for: right after the previous one ended
//       (back to back, as the attaches of a burst of pods queue on the rtnl lock) it took
//       16 ms here, at an arbitrary moment 8 ms. --spaced pauses a random 10-30 ms after
//       each release, so every attach starts at an arbitrary moment, as one pod's does.
//   nk-bench-bpf filter [--spaced] IFINDEX...
//       The attach netkit-cni makes on a veth host end, bare: for each IFINDEX, an ingress
//       qdisc and a direct-action cls_bpf filter running the same two-instruction program
//       (two netlink requests, as the agent sends them). Prints "ATTACH_US" per line. No
//       normal grace period: the filter swaps the qdisc's mini-Qdisc, which waits at most for
//       an expedited one. --spaced as for attach.
//   nk-bench-bpf bare FROM:TO...
//       The floor of a BPF datapath on veth: on each host-side veth FROM, the same ingress
//       qdisc and filter, running an eight-instruction program that sends every IPv4 packet
//       to TO's peer (the pod behind host-side veth TO) with bpf_redirect_peer, looking
//       nothing up; the rest (ARP) passes. One program run and one redirect per packet.
//   nk-bench-bpf bare-link PIN:TO...
//       The same floor on netkit: the program behind each pinned netkit peer link PIN (a
//       netkit-cni pod's egress) replaced (BPF_LINK_UPDATE) by one that sends IPv4 to TO,
//       another pod's primary, with bpf_redirect, as netkit-cni's program does after its
//       lookups.
//   nk-bench-bpf bare-out ifindex:N|PIN UPLINK DMAC SMAC
//   nk-bench-bpf bare-in PIN POD_IP TO
//       The floor of a cross-node BPF datapath, for hack/bench-crossnode.sh. bare-out: a
//       pod's egress program (the filter on veth host end N, or behind netkit peer link PIN)
//       replaced by one that gives IPv4 the fixed MACs DMAC (the next hop's) and SMAC and
//       sends it to UPLINK with bpf_redirect. bare-in: the program behind an uplink's tcx
//       link PIN replaced by one that sends IPv4 to POD_IP into the pod behind TO with
//       bpf_redirect_peer and passes everything else. Nothing looked up, no TTL lowered.
//   nk-bench-bpf info PROG_ID...
//       Prints "ID NAME VERIFIED_INSNS XLATED_BYTES JITED_BYTES" per program
//       (bpf_prog_info; verified_insns is reported by kernels >= 5.16, 0 before).
//   nk-bench-bpf runstats PROG...
//       PROG is a pinned link (the program behind it) or id:N (program N). For each: "PROG_ID NAME RUN_CNT RUN_TIME_NS"
//       (bpf_prog_info; both stay 0 unless kernel.bpf_stats_enabled=1 while it runs).
//   nk-bench-bpf testrun PROG IFINDEX SRC DST udp|tcp|icmp CALLS
//       Runs PROG (as for runstats) on one IPv4 packet SRC -> DST (Ethernet,
//       TTL 64, 14 bytes of payload) as if it arrived on IFINDEX of the caller's network
//       namespace (BPF_PROG_TEST_RUN): CALLS calls of 50 runs each (the program may lower
//       the TTL, so no more runs than that on one packet). Prints "NS_PER_RUN RETVAL":
//       the program alone, cache-hot, with its helpers and kfuncs, without the clock
//       reads bpf_stats adds.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/rtnetlink.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// Newer than some distributions' headers: enum bpf_attach_type values, fixed by the ABI.
#define NK_TCX_INGRESS 46
#define NK_NETKIT_PRIMARY 54
#define NK_NETKIT_PEER 55

// attr.link_create for tcx / netkit: the mprog fields follow the common head.
struct nk_link_create_attr {
    uint32_t prog_fd, target_ifindex, attach_type, flags, relative, pad;
    uint64_t expected_revision;
};

static long sys_bpf(int cmd, void *attr, unsigned size) { return syscall(SYS_bpf, cmd, attr, size); }

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

// The object pinned at PIN (BPF_OBJ_GET): an fd, or -1 with errno set.
static int obj_get(const char *pin) {
    union bpf_attr get;
    memset(&get, 0, sizeof get);
    get.pathname = (uint64_t)(uintptr_t)pin;
    return (int)sys_bpf(BPF_OBJ_GET, &get, sizeof get);
}

static int load_prog(const struct bpf_insn *insns, uint32_t cnt, uint32_t expected_attach_type, const char *name) {
    union bpf_attr load;
    memset(&load, 0, sizeof load);
    load.prog_type = BPF_PROG_TYPE_SCHED_CLS;
    load.insn_cnt = cnt;
    load.insns = (uint64_t)(uintptr_t)insns;
    load.license = (uint64_t)(uintptr_t) "GPL";
    load.expected_attach_type = expected_attach_type;
    strncpy(load.prog_name, name, sizeof load.prog_name - 1);
    int prog = (int)sys_bpf(BPF_PROG_LOAD, &load, sizeof load);
    if (prog < 0)
        fprintf(stderr, "nk-bench-bpf: BPF_PROG_LOAD %s: %s\n", name, strerror(errno));
    return prog;
}

// A two-instruction SCHED_CLS program: r0 = 0 (TCX_PASS / NETKIT_PASS / TC_ACT_OK); exit.
static int load_pass_prog(uint32_t expected_attach_type) {
    static const struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    return load_prog(insns, 2, expected_attach_type, "nk_bench_floor");
}

// The least a BPF datapath can do per packet: IPv4 goes to TARGET by HELPER, nothing
// parsed and nothing looked up; everything else (ARP) passes to the stack. On a veth host
// end's ingress HELPER is bpf_redirect_peer into the pod behind host end TARGET (no MAC
// rewritten: the frame keeps the sending pod's gateway MAC, which already made it
// PACKET_HOST); on a netkit peer it is bpf_redirect to the other pod's primary, as
// netkit-cni's own program does.
static int load_redirect_prog(uint32_t target, int helper, uint32_t expected_attach_type) {
    const struct bpf_insn insns[8] = {
        // r2 = skb->protocol (network byte order)
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 2, .src_reg = 1,
         .off = offsetof(struct __sk_buff, protocol)},
        // if r2 != htons(ETH_P_IP) goto pass
        {.code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = 2, .off = 4, .imm = htons(ETH_P_IP)},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 1, .imm = (int32_t)target},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 2, .imm = 0},
        {.code = BPF_JMP | BPF_CALL, .imm = helper},
        {.code = BPF_JMP | BPF_EXIT},
        // pass: r0 = TC_ACT_OK / NETKIT_PASS
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    return load_prog(insns, 8, expected_attach_type, "nk_bench_bare");
}

static void add_attr(struct nlmsghdr *n, unsigned short type, const void *data, unsigned len) {
    struct rtattr *rta = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(rta), data, len);
    n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

// Send one request and wait for its acknowledgement; the kernel's errno, 0 on success.
static int nl_call(int sock, struct nlmsghdr *n) {
    if (send(sock, n, n->nlmsg_len, 0) < 0)
        return errno;
    char buf[4096];
    ssize_t len = recv(sock, buf, sizeof buf, 0);
    if (len < (ssize_t)NLMSG_HDRLEN)
        return len < 0 ? errno : EIO;
    struct nlmsghdr *r = (struct nlmsghdr *)buf;
    if (r->nlmsg_type != NLMSG_ERROR)
        return EIO;
    return -((struct nlmsgerr *)NLMSG_DATA(r))->error;
}

// An ingress qdisc and a direct-action cls_bpf filter running PROG on IFINDEX: the two
// netlink requests netkit-cni's agent sends for a veth host end. 0 or the kernel's errno.
static int attach_filter(int sock, int ifindex, int prog) {
    struct {
        struct nlmsghdr n;
        struct tcmsg t;
        char attrs[256];
    } qdisc, flt;
    memset(&qdisc, 0, sizeof qdisc);
    qdisc.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg));
    qdisc.n.nlmsg_type = RTM_NEWQDISC;
    qdisc.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    qdisc.t.tcm_ifindex = ifindex;
    qdisc.t.tcm_parent = TC_H_CLSACT;
    qdisc.t.tcm_handle = TC_H_MAKE(TC_H_CLSACT, 0);
    add_attr(&qdisc.n, TCA_KIND, "ingress", 8);

    memset(&flt, 0, sizeof flt);
    flt.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg));
    flt.n.nlmsg_type = RTM_NEWTFILTER;
    flt.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    flt.t.tcm_ifindex = ifindex;
    flt.t.tcm_parent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);
    flt.t.tcm_handle = 1;
    flt.t.tcm_info = TC_H_MAKE(1u << 16, htons(ETH_P_ALL));
    add_attr(&flt.n, TCA_KIND, "bpf", 4);
    struct rtattr *opts = (struct rtattr *)((char *)&flt.n + NLMSG_ALIGN(flt.n.nlmsg_len));
    add_attr(&flt.n, TCA_OPTIONS, NULL, 0);
    uint32_t fd = (uint32_t)prog, flags = TCA_BPF_FLAG_ACT_DIRECT;
    add_attr(&flt.n, TCA_BPF_FD, &fd, sizeof fd);
    add_attr(&flt.n, TCA_BPF_NAME, "nk_bench_floor", 15);
    add_attr(&flt.n, TCA_BPF_FLAGS, &flags, sizeof flags);
    opts->rta_len = (unsigned short)((char *)&flt.n + flt.n.nlmsg_len - (char *)opts);

    int err = nl_call(sock, &qdisc.n);
    // An ingress qdisc already there (netkit-cni's own, whose filter this replaces).
    if (err == EEXIST)
        err = 0;
    return err ? err : nl_call(sock, &flt.n);
}

static int route_socket(void) {
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (sock < 0)
        fprintf(stderr, "nk-bench-bpf: netlink socket: %s\n", strerror(errno));
    return sock;
}

static int filter(int argc, char **argv, int spaced) {
    int prog = load_pass_prog(0);
    if (prog < 0)
        return 1;
    int sock = route_socket();
    if (sock < 0)
        return 1;
    for (int i = 0; i < argc; i++) {
        double t0 = now_us();
        int err = attach_filter(sock, (int)strtol(argv[i], NULL, 10), prog);
        double t1 = now_us();
        if (err) {
            fprintf(stderr, "nk-bench-bpf: ingress qdisc + cls_bpf on ifindex %s: %s\n", argv[i], strerror(err));
            return 1;
        }
        printf("%.0f\n", t1 - t0);
        if (spaced)
            usleep(10000 + (useconds_t)(rand() % 20000));
    }
    close(sock);
    close(prog);
    return 0;
}

// For each FROM:TO, the bare redirect program on FROM's ingress (as netkit-cni's filter),
// sending FROM's IPv4 to TO's peer. The filters hold the programs; nothing stays running.
static int bare(int argc, char **argv) {
    int sock = route_socket();
    if (sock < 0)
        return 1;
    for (int i = 0; i < argc; i++) {
        unsigned from, to;
        if (sscanf(argv[i], "%u:%u", &from, &to) != 2) {
            fprintf(stderr, "nk-bench-bpf: bare wants FROM:TO ifindex pairs, not %s\n", argv[i]);
            return 2;
        }
        int prog = load_redirect_prog(to, BPF_FUNC_redirect_peer, 0);
        if (prog < 0)
            return 1;
        int err = attach_filter(sock, (int)from, prog);
        close(prog);
        if (err) {
            fprintf(stderr, "nk-bench-bpf: bare redirect on ifindex %u: %s\n", from, strerror(err));
            return 1;
        }
    }
    close(sock);
    return 0;
}

static int attach(int argc, char **argv, int spaced) {
    uint32_t at;
    if (!strcmp(argv[0], "tcx_ingress"))
        at = NK_TCX_INGRESS;
    else if (!strcmp(argv[0], "netkit_primary"))
        at = NK_NETKIT_PRIMARY;
    else if (!strcmp(argv[0], "netkit_peer"))
        at = NK_NETKIT_PEER;
    else {
        fprintf(stderr, "nk-bench-bpf: unknown attach type %s\n", argv[0]);
        return 2;
    }
    int prog = load_pass_prog(at);
    if (prog < 0)
        return 1;
    for (int i = 1; i < argc; i++) {
        struct nk_link_create_attr link = {
            .prog_fd = (uint32_t)prog,
            .target_ifindex = (uint32_t)strtoul(argv[i], NULL, 10),
            .attach_type = at,
        };
        double t0 = now_us();
        int fd = (int)sys_bpf(BPF_LINK_CREATE, &link, sizeof link);
        double t1 = now_us();
        if (fd < 0) {
            fprintf(stderr, "nk-bench-bpf: BPF_LINK_CREATE on ifindex %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        close(fd); // the last reference: the link is released (detached) before close returns
        double t2 = now_us();
        printf("%.0f %.0f\n", t1 - t0, t2 - t1);
        if (spaced)
            usleep(10000 + (useconds_t)(rand() % 20000));
    }
    return 0;
}

// Replace the program behind pinned link PIN by PROG (BPF_LINK_UPDATE).
static int update_pinned_link(const char *pin, int prog) {
    int link = obj_get(pin);
    if (link < 0) {
        fprintf(stderr, "nk-bench-bpf: %s: %s\n", pin, strerror(errno));
        return 1;
    }
    union bpf_attr update;
    memset(&update, 0, sizeof update);
    update.link_update.link_fd = (uint32_t)link;
    update.link_update.new_prog_fd = (uint32_t)prog;
    int failed = sys_bpf(BPF_LINK_UPDATE, &update, sizeof update) < 0;
    if (failed)
        fprintf(stderr, "nk-bench-bpf: BPF_LINK_UPDATE %s: %s\n", pin, strerror(errno));
    close(link);
    return failed;
}

// For each PIN:TARGET, the program behind the pinned netkit peer link PIN (a netkit-cni
// pod's egress) replaced by the bare one, sending its IPv4 to TARGET (another pod's
// primary) with bpf_redirect.
static int bare_link(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        char *colon = strrchr(argv[i], ':');
        if (!colon) {
            fprintf(stderr, "nk-bench-bpf: bare-link wants PIN:TARGET_IFINDEX, not %s\n", argv[i]);
            return 2;
        }
        *colon = '\0';
        int prog = load_redirect_prog((uint32_t)strtoul(colon + 1, NULL, 10), BPF_FUNC_redirect, NK_NETKIT_PEER);
        if (prog < 0)
            return 1;
        int failed = update_pinned_link(argv[i], prog);
        close(prog);
        if (failed)
            return 1;
    }
    return 0;
}

// The least a cross-node BPF datapath can do per packet, sending side: IPv4 gets fixed
// MACs (the next hop's, the uplink's) in one bpf_skb_store_bytes and goes to the uplink by
// bpf_redirect; nothing parsed, nothing looked up, no TTL touched. The rest passes.
static int load_bare_out(uint32_t uplink, const unsigned char dmac[6], const unsigned char smac[6],
                         uint32_t expected_attach_type) {
    unsigned char macs[12];
    memcpy(macs, dmac, 6);
    memcpy(macs + 6, smac, 6);
    int32_t words[3];
    memcpy(words, macs, sizeof words);
    const struct bpf_insn insns[19] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 6, .src_reg = 1},
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 2, .src_reg = 1,
         .off = offsetof(struct __sk_buff, protocol)},
        // (to "pass", insn 17)
        {.code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = 2, .off = 14, .imm = htons(ETH_P_IP)},
        {.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = 10, .off = -16, .imm = words[0]},
        {.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = 10, .off = -12, .imm = words[1]},
        {.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = 10, .off = -8, .imm = words[2]},
        // bpf_skb_store_bytes(skb, 0, fp - 16, 12, 0)
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 1, .src_reg = 6},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 2, .imm = 0},
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 3, .src_reg = 10},
        {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 3, .imm = -16},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 4, .imm = 12},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 5, .imm = 0},
        {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_skb_store_bytes},
        // bpf_redirect(uplink, 0)
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 1, .imm = (int32_t)uplink},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 2, .imm = 0},
        {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect},
        {.code = BPF_JMP | BPF_EXIT},
        // pass: r0 = 0
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    return load_prog(insns, 19, expected_attach_type, "nk_bench_bare");
}

// Receiving side: IPv4 to POD_IP goes into the pod behind TARGET by bpf_redirect_peer;
// everything else passes to the stack (TCX_PASS), as before.
static int load_bare_in(uint32_t pod_ip, uint32_t target, uint32_t expected_attach_type) {
    int32_t ip;
    memcpy(&ip, &pod_ip, sizeof ip); // network order, as the packet holds it
    const struct bpf_insn insns[15] = {
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 2, .src_reg = 1,
         .off = offsetof(struct __sk_buff, protocol)},
        // (the jumps go to "pass", insn 13)
        {.code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = 2, .off = 11, .imm = htons(ETH_P_IP)},
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 2, .src_reg = 1, .off = offsetof(struct __sk_buff, data)},
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 3, .src_reg = 1,
         .off = offsetof(struct __sk_buff, data_end)},
        {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 4, .src_reg = 2},
        {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 4, .imm = 34},
        {.code = BPF_JMP | BPF_JGT | BPF_X, .dst_reg = 4, .src_reg = 3, .off = 6},
        // the IPv4 destination, bytes 30..34 of the frame
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 5, .src_reg = 2, .off = 30},
        {.code = BPF_JMP32 | BPF_JNE | BPF_K, .dst_reg = 5, .off = 4, .imm = ip},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 1, .imm = (int32_t)target},
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 2, .imm = 0},
        {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_peer},
        {.code = BPF_JMP | BPF_EXIT},
        // pass: r0 = TCX_PASS
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    return load_prog(insns, 15, expected_attach_type, "nk_bench_bare");
}

static int parse_mac(const char *text, unsigned char mac[6]) {
    if (sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6) {
        fprintf(stderr, "nk-bench-bpf: not a MAC address: %s\n", text);
        return -1;
    }
    return 0;
}

// bare-out HOOK UPLINK DMAC SMAC: HOOK is ifindex:N (a veth host end: its ingress filter
// is replaced) or a pinned netkit peer link.
static int bare_out(char **argv) {
    unsigned char dmac[6], smac[6];
    if (parse_mac(argv[2], dmac) < 0 || parse_mac(argv[3], smac) < 0)
        return 2;
    uint32_t uplink = (uint32_t)strtoul(argv[1], NULL, 10);
    int veth = !strncmp(argv[0], "ifindex:", 8);
    int prog = load_bare_out(uplink, dmac, smac, veth ? 0 : NK_NETKIT_PEER);
    if (prog < 0)
        return 1;
    int failed;
    if (veth) {
        int sock = route_socket();
        if (sock < 0)
            return 1;
        int err = attach_filter(sock, (int)strtol(argv[0] + 8, NULL, 10), prog);
        if (err)
            fprintf(stderr, "nk-bench-bpf: bare-out filter on %s: %s\n", argv[0], strerror(err));
        failed = err != 0;
        close(sock);
    } else {
        failed = update_pinned_link(argv[0], prog);
    }
    close(prog);
    return failed;
}

// bare-in PIN POD_IP TARGET: the pinned tcx ingress link PIN (an uplink) runs the bare
// receiving program instead.
static int bare_in(char **argv) {
    struct in_addr ip;
    if (inet_pton(AF_INET, argv[1], &ip) != 1) {
        fprintf(stderr, "nk-bench-bpf: not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int prog = load_bare_in(ip.s_addr, (uint32_t)strtoul(argv[2], NULL, 10), NK_TCX_INGRESS);
    if (prog < 0)
        return 1;
    int failed = update_pinned_link(argv[0], prog);
    close(prog);
    return failed;
}

/* BPF_OBJ_GET_INFO_BY_FD into a zeroed `info` of `len` bytes. */
static long obj_info(int fd, void *info, uint32_t len) {
    memset(info, 0, len);
    union bpf_attr q;
    memset(&q, 0, sizeof q);
    q.info.bpf_fd = (uint32_t)fd;
    q.info.info_len = len;
    q.info.info = (uint64_t)(uintptr_t)info;
    return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &q, sizeof q);
}

static int prog_info_by_id(uint32_t id, struct bpf_prog_info *pi) {
    union bpf_attr get;
    memset(&get, 0, sizeof get);
    get.prog_id = id;
    int fd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &get, sizeof get);
    if (fd < 0)
        return -1;
    long ret = obj_info(fd, pi, sizeof *pi);
    close(fd);
    return ret < 0 ? -1 : 0;
}

static int info(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        struct bpf_prog_info pi;
        if (prog_info_by_id((uint32_t)strtoul(argv[i], NULL, 10), &pi) < 0) {
            fprintf(stderr, "nk-bench-bpf: program %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        printf("%u %s %u %u %u\n", pi.id, pi.name[0] ? pi.name : "-", pi.verified_insns,
               pi.xlated_prog_len, pi.jited_prog_len);
    }
    return 0;
}

/* The id of the program `pin` names: "id:N", or the program the BPF link pinned at `pin`
 * runs; -1 (errno set) on failure. */
static int link_prog_id(const char *pin, uint32_t *id) {
    if (!strncmp(pin, "id:", 3)) {
        char *end;
        unsigned long n = strtoul(pin + 3, &end, 10);
        if (*end || !n) {
            errno = EINVAL;
            return -1;
        }
        *id = (uint32_t)n;
        return 0;
    }
    int link = obj_get(pin);
    if (link < 0)
        return -1;
    struct bpf_link_info li;
    long ret = obj_info(link, &li, sizeof li);
    close(link);
    if (ret < 0)
        return -1;
    *id = li.prog_id;
    return 0;
}

static int runstats(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        uint32_t id;
        struct bpf_prog_info pi;
        if (link_prog_id(argv[i], &id) < 0 || prog_info_by_id(id, &pi) < 0) {
            fprintf(stderr, "nk-bench-bpf: program of link %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        printf("%u %s %llu %llu\n", pi.id, pi.name[0] ? pi.name : "-", (unsigned long long)pi.run_cnt,
               (unsigned long long)pi.run_time_ns);
    }
    return 0;
}

static int prog_fd_of_link(const char *pin) {
    uint32_t id;
    if (link_prog_id(pin, &id) < 0)
        return -1;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_id = id;
    return (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &a, sizeof a);
}

static uint16_t ip_checksum(const unsigned char *p, int n) {
    uint32_t sum = 0;
    for (int i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static int testrun(char **argv) {
    int prog = prog_fd_of_link(argv[0]);
    if (prog < 0) {
        fprintf(stderr, "nk-bench-bpf: program of link %s: %s\n", argv[0], strerror(errno));
        return 1;
    }
    int proto = !strcmp(argv[4], "tcp") ? 6 : !strcmp(argv[4], "icmp") ? 1 : 17;
    int l4 = proto == 6 ? 20 : 8, ip_len = 20 + l4 + 14;
    unsigned char pkt[14 + 20 + 20 + 14], out[sizeof pkt + 64];
    memset(pkt, 0, sizeof pkt);
    pkt[0] = 0x02, pkt[6] = 0x02, pkt[12] = 0x08; // locally administered MACs, IPv4
    unsigned char *ip = pkt + 14, *l4h = ip + 20;
    ip[0] = 0x45, ip[2] = (unsigned char)(ip_len >> 8), ip[3] = (unsigned char)ip_len;
    ip[8] = 64, ip[9] = (unsigned char)proto;
    if (inet_pton(AF_INET, argv[2], ip + 12) != 1 || inet_pton(AF_INET, argv[3], ip + 16) != 1) {
        fprintf(stderr, "nk-bench-bpf: not IPv4 addresses: %s %s\n", argv[2], argv[3]);
        return 2;
    }
    uint16_t check = ip_checksum(ip, 20);
    ip[10] = (unsigned char)(check >> 8), ip[11] = (unsigned char)check;
    if (proto == 1) {
        l4h[0] = 8; // echo request
    } else {
        l4h[0] = 0x9c, l4h[1] = 0x40, l4h[2] = 0x2b, l4h[3] = 0x67; // ports 40000 -> 11111
        if (proto == 6)
            l4h[12] = 0x50, l4h[13] = 0x10; // data offset 5, ACK
        else
            l4h[5] = (unsigned char)(8 + 14);
    }
    struct __sk_buff ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.ifindex = (uint32_t)strtoul(argv[1], NULL, 10);
    int calls = atoi(argv[5]);
    double total = 0;
    unsigned retval = 0;
    for (int i = 0; i < calls; i++) {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.test.prog_fd = (uint32_t)prog;
        a.test.data_in = (uint64_t)(uintptr_t)pkt;
        a.test.data_size_in = 14 + (uint32_t)ip_len;
        a.test.data_out = (uint64_t)(uintptr_t)out;
        a.test.data_size_out = sizeof out;
        a.test.ctx_in = (uint64_t)(uintptr_t)&ctx;
        a.test.ctx_size_in = sizeof ctx;
        a.test.repeat = 50;
        if (sys_bpf(BPF_PROG_TEST_RUN, &a, sizeof a) < 0) {
            fprintf(stderr, "nk-bench-bpf: BPF_PROG_TEST_RUN %s: %s\n", argv[0], strerror(errno));
            return 1;
        }
        total += a.test.duration;
        retval = a.test.retval;
    }
    close(prog);
    printf("%.0f %u\n", calls > 0 ? total / calls : 0.0, retval);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "attach") && !strcmp(argv[3], "--spaced")) {
        argv[3] = argv[2]; // the attach type, followed by the ifindexes
        return attach(argc - 3, argv + 3, 1);
    }
    if (argc >= 3 && !strcmp(argv[1], "attach"))
        return attach(argc - 2, argv + 2, 0);
    if (argc >= 4 && !strcmp(argv[1], "filter") && !strcmp(argv[2], "--spaced"))
        return filter(argc - 3, argv + 3, 1);
    if (argc >= 3 && !strcmp(argv[1], "filter"))
        return filter(argc - 2, argv + 2, 0);
    if (argc >= 3 && !strcmp(argv[1], "bare"))
        return bare(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "bare-link"))
        return bare_link(argc - 2, argv + 2);
    if (argc == 6 && !strcmp(argv[1], "bare-out"))
        return bare_out(argv + 2);
    if (argc == 5 && !strcmp(argv[1], "bare-in"))
        return bare_in(argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "info"))
        return info(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "runstats"))
        return runstats(argc - 2, argv + 2);
    if (argc == 8 && !strcmp(argv[1], "testrun"))
        return testrun(argv + 2);
    fprintf(stderr, "usage: %s attach tcx_ingress|netkit_primary|netkit_peer [--spaced] IFINDEX...\n"
                    "       %s filter [--spaced] IFINDEX...\n"
                    "       %s bare FROM_IFINDEX:TO_IFINDEX...\n"
                    "       %s bare-link LINK_PIN:TO_IFINDEX...\n"
                    "       %s bare-out ifindex:N|LINK_PIN UPLINK_IFINDEX DMAC SMAC\n"
                    "       %s bare-in LINK_PIN POD_IPV4 TO_IFINDEX\n"
                    "       %s info PROG_ID...\n"
                    "       %s runstats LINK_PIN|id:PROG_ID...\n"
                    "       %s testrun LINK_PIN|id:PROG_ID IFINDEX SRC DST udp|tcp|icmp CALLS\n",
            argv[0], argv[0], argv[0], argv[0], argv[0], argv[0], argv[0], argv[0], argv[0]);
    return 2;
}
