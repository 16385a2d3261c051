#!/usr/bin/env python3
# scripts/bench.d/pss_quiet.py PID...: the PSS of a process tree (orch and
# its fd holder) as a quiet machine counts it, measured on a busy one
# (doc/benchmarks.md, "Memory per service, ninth session"). PSS divides a
# file page among the processes that map it: under load other orch
# processes share liblua, libuv and the like, on a quiet machine only the
# tree maps them and they count whole. Here: anonymous pages (and the
# private copies in file mappings) by their own size; the pages of every
# file but libc and ld.so once each (the union of their page frames over
# the given processes, /proc/PID/pagemap: needs root), as if nothing else
# mapped them; libc and ld.so, which every process maps, by their PSS of
# the moment. Prints each part and "quiet_pss_total N KiB". Also (not in
# the total) "libc_ld_quiet K1= K2= K4=": libc's and ld.so's pages of the
# given processes as a machine where K other processes map every page of
# them counts them (a page mapped by n of the given processes: n/(n+K)); a
# shell maps all of libc's text, and on a quiet machine a few do (the
# twelfth session's "Memory per service").
import sys, struct, re, collections
SHARED = ('libc.so', 'ld-linux')
pids = sys.argv[1:]
union = collections.defaultdict(set)
shared_n = collections.Counter()     # libc/ld.so page frame -> how many given processes map it
other = collections.Counter()
for pid in pids:
    maps = open(f'/proc/{pid}/smaps').read().split('\n')
    pm = open(f'/proc/{pid}/pagemap', 'rb')
    cur = None
    for line in maps:
        m = re.match(r'^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$', line)
        if m:
            lo, hi, inode, name = int(m[1], 16), int(m[2], 16), int(m[3]), m[4].strip()
            cur = (lo, hi, inode, name or '[anon]')
            continue
        if line.startswith('Pss:') and cur:
            lo, hi, inode, name = cur
            kb = int(line.split()[1])
            if inode == 0 or any(s in name for s in SHARED):
                other[(pid, name if inode == 0 else name)] += kb
                if inode == 0:
                    continue
            pm.seek(lo // 4096 * 8)
            data = pm.read((hi - lo) // 4096 * 8)
            if any(s in name for s in SHARED):
                for i in range(len(data) // 8):
                    v = struct.unpack_from('<Q', data, i * 8)[0]
                    if v >> 63 and (v >> 61) & 1:
                        shared_n[v & ((1 << 55) - 1)] += 1
                continue
            for i in range(len(data) // 8):
                v = struct.unpack_from('<Q', data, i * 8)[0]
                if v >> 63 and not (v >> 62) & 1:  # present, not swapped
                    pfn = v & ((1 << 55) - 1)
                    # anonymous (COW'd private) pages of a file mapping: v bit 61 = file/shared-anon
                    if (v >> 61) & 1:
                        union[name].add(pfn)
                    else:
                        other[(pid, name + ' (private)')] += 4
tot = 0
for name, s in sorted(union.items(), key=lambda x: -len(x[1])):
    print(f'  file {name:60s} {len(s)*4:6d} KiB (union)'); tot += len(s) * 4
for (pid, name), kb in sorted(other.items(), key=lambda x: -x[1]):
    if kb: print(f'  {pid:>7} {name:58s} {kb:6d} KiB')
    tot += kb
print('libc_ld_quiet ' + ' '.join(f'K{k}={round(sum(n / (n + k) for n in shared_n.values()) * 4)}' for k in (1, 2, 4))
      + f' KiB (pages {len(shared_n) * 4} KiB)')
print(f'quiet_pss_total {tot} KiB')
