#!/usr/bin/env bash
# Measures the same steps on `ferry up` with the stand-in kubelet and with real kubelets
# (--kubelet=real), one after the other on this machine: set-up, VM create → Running, three
# Evicts end to end (ferry v evict --wait), and a node power loss → the VM Running on
# another node. As root, after `make build node-bins`. Prints one table.
#   bash hack/compare-kubelets.sh [stand-in] [real]   (FERRY_IMAGE_CACHE=/tmp/x: a cold image build)
set -euo pipefail
cd "$(dirname "$0")/.."
ferry=$PWD/bin/ferry
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
results=()

run() {
	local mode=$1 dir up_pid t0 vm_t0 node
	dir=$(mktemp -d /tmp/ferry-compare-XXXX)
	t0=$(now)
	"$ferry" --state-dir "$dir" up --kubelet="$mode" --port 16443 >"$dir/up.out" 2>&1 &
	up_pid=$!
	trap 'kill $up_pid 2>/dev/null; wait $up_pid 2>/dev/null' RETURN
	until grep -q "Ferry is up" "$dir/up.out"; do
		kill -0 $up_pid 2>/dev/null || { cat "$dir/up.out"; return 1; }
		sleep 0.2
	done
	local setup; setup=$(since "$t0")
	k() { "$ferry" --state-dir "$dir" k "$@"; }
	until [[ $(k get vm linux-vm -o jsonpath='{.status.phase}' 2>/dev/null) == Running ]]; do sleep 0.2; done
	local created running
	created=$(k get vm linux-vm -o jsonpath='{.metadata.creationTimestamp}')
	running=$(k get vm linux-vm -o jsonpath='{.status.conditions[?(@.type=="Running")].lastTransitionTime}')
	local start=$(( $(date -d "$running" +%s) - $(date -d "$created" +%s) ))
	local evicts=()
	for i in 1 2 3; do
		vm_t0=$(now)
		"$ferry" --state-dir "$dir" v evict linux-vm --wait --timeout 3m >/dev/null
		evicts+=("$(since "$vm_t0")")
	done
	node=$(k get vm linux-vm -o jsonpath='{.status.nodeName}')
	vm_t0=$(now)
	"$ferry" --state-dir "$dir" node poweroff "$node" >/dev/null
	until [[ $(k get vm linux-vm -o jsonpath='{.status.phase} {.status.nodeName}' 2>/dev/null) =~ ^Running\ (node-[0-9]+)$ && ${BASH_REMATCH[1]} != "$node" ]]; do sleep 0.1; done
	local failover; failover=$(since "$vm_t0")
	results+=("$(printf '| %-8s | %6s s | %3s s (whole seconds) | %s s | %s s |' "$mode" "$setup" "$start" "${evicts[*]}" "$failover")")
	kill $up_pid; wait $up_pid 2>/dev/null || true
	trap - RETURN
	rm -rf "$dir"
}

for mode in ${@:-stand-in real}; do
	run "$mode"
done
echo "| kubelet  | ferry up → up | VM create → Running | Evict --wait ×3 | power loss → Running elsewhere |"
echo "|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
