// The clock of hack/bench.sh's sequential CNI calls (it builds this with cc):
//
//   nk-bench-spawn NETNS_PATH CONF OUT PLUGIN
//       Enters the network namespace at NETNS_PATH, then starts PLUGIN with CONF on its
//       stdin, its stdout and stderr to OUT, and its environment (the CNI_* variables) inherited,
//       and waits for it. Prints the microseconds from just before the spawn to its exit
//       having been reaped, and exits 0 when the plugin did; otherwise prints nothing
//       and exits 1.
//
// What is timed is then the plugin's process alone (its exec, its work, its exit), as a
// runtime that spawns plugins sees it, and not the harness around it: timed from bash,
// a call also pays bash forking itself (a large process by then) and an nsenter exec,
// milliseconds on a small VM, the same for every plugin, which pulls all ratios towards 1.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s NETNS_PATH CONF OUT PLUGIN\n", argv[0]);
        return 2;
    }
    int ns = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
        fprintf(stderr, "nk-bench-spawn: entering %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    close(ns);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 0, argv[2], O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&files, 1, argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
    char *child_argv[] = {argv[4], NULL};
    pid_t pid;
    long long start = now_us();
    int err = posix_spawn(&pid, argv[4], &files, NULL, child_argv, environ);
    if (err != 0) {
        fprintf(stderr, "nk-bench-spawn: starting %s: %s\n", argv[4], strerror(err));
        return 1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "nk-bench-spawn: waiting for %s: %s\n", argv[4], strerror(errno));
            return 1;
        }
    }
    long long elapsed = now_us() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 1;
    printf("%lld\n", elapsed);
    return 0;
}
