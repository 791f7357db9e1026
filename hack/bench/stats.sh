# Shared by hack/bench.sh and hack/bench-crossnode.sh (sourced; both take it into the VM).

# median VALUES... -> the middle value, the mean of the two middle ones for an even count;
# "-" values (a measurement that did not happen) are left out, and "-" when none is left.
median() {
    printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '
        {v[NR] = $1}
        END {
            if (NR == 0) print "-"
            else if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
