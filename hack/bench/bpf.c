// BPF measurements for hack/bench.sh, with no libbpf and no clang (it builds this with cc):
//
//   nk-bench-bpf attach tcx_ingress|netkit_primary|netkit_peer IFINDEX...
//       The floor of a pod start, bare: for each IFINDEX, one BPF_LINK_CREATE of a
//       two-instruction program, then the close (release) of that live link. Prints
//       "ATTACH_US RELEASE_US" per line.
//   nk-bench-bpf info PROG_ID...
//       Prints "ID NAME VERIFIED_INSNS XLATED_BYTES JITED_BYTES" per program
//       (bpf_prog_info; verified_insns is reported by kernels >= 5.16, 0 before).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int attach(int argc, char **argv) {
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
    // r0 = 0 (TCX_PASS / NETKIT_PASS); exit
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr load;
    memset(&load, 0, sizeof load);
    load.prog_type = BPF_PROG_TYPE_SCHED_CLS;
    load.insn_cnt = 2;
    load.insns = (uint64_t)(uintptr_t)insns;
    load.license = (uint64_t)(uintptr_t) "GPL";
    load.expected_attach_type = at;
    strcpy(load.prog_name, "nk_bench_floor");
    int prog = (int)sys_bpf(BPF_PROG_LOAD, &load, sizeof load);
    if (prog < 0) {
        fprintf(stderr, "nk-bench-bpf: BPF_PROG_LOAD: %s\n", strerror(errno));
        return 1;
    }
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
    }
    return 0;
}

static int info(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        union bpf_attr get;
        memset(&get, 0, sizeof get);
        get.prog_id = (uint32_t)strtoul(argv[i], NULL, 10);
        int fd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &get, sizeof get);
        if (fd < 0) {
            fprintf(stderr, "nk-bench-bpf: BPF_PROG_GET_FD_BY_ID %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        struct bpf_prog_info pi;
        memset(&pi, 0, sizeof pi);
        union bpf_attr q;
        memset(&q, 0, sizeof q);
        q.info.bpf_fd = (uint32_t)fd;
        q.info.info_len = sizeof pi;
        q.info.info = (uint64_t)(uintptr_t)&pi;
        if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &q, sizeof q) < 0) {
            fprintf(stderr, "nk-bench-bpf: BPF_OBJ_GET_INFO_BY_FD %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        close(fd);
        printf("%u %s %u %u %u\n", pi.id, pi.name[0] ? pi.name : "-", pi.verified_insns,
               pi.xlated_prog_len, pi.jited_prog_len);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "attach"))
        return attach(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "info"))
        return info(argc - 2, argv + 2);
    fprintf(stderr, "usage: %s attach tcx_ingress|netkit_primary|netkit_peer IFINDEX...\n"
                    "       %s info PROG_ID...\n", argv[0], argv[0]);
    return 2;
}
