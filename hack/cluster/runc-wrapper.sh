#!/bin/sh
# runc for the local cluster's containerd (its BinaryName): runc, except that a
# container's negative oom_score_adj is raised to 0 in the bundle before `create`.
# Why: the machines this tier runs on withhold CAP_SYS_RESOURCE even from root, and
# without it the kernel refuses to lower oom_score_adj, so runc's init dies ("failed to
# update /proc/self/oom_score_adj: Permission denied") for every pod the kubelet gives
# a negative score: node- and cluster-critical pods (ours, CoreDNS) and Guaranteed pods.
# Only the OOM killer's preference changes; a host with the capability needs no wrapper
# (up.sh uses it only when the capability is missing).
bundle=""; prev=""
for arg in "$@"; do
    [ "$prev" = --bundle ] && bundle="$arg"
    prev="$arg"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
    sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec runc "$@"
