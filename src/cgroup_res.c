/*
 * cgroup_res.c: a cgroup's resources (see cgroup.h): accounting read from
 * v2 (cpu.stat always; memory and pids where v2 has the controller) or from
 * the v1 mirror of the controller, and limits written to whichever of the
 * two has it, enabling the controller in v2 or making the v1 mirror at the
 * first limit. The files, the held fds and the creation of cgroups are
 * cgroup.c's (cgroup_int.h); this file holds no state of its own.
 *
 * What may block: nothing for long (cgroupfs reads and writes; a v1
 * memory limit lower than the usage reclaims first).
 */
#include "cgroup.h"
#include "cgroup_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- stat */

/* The memory figure's file: v2 memory.current, or the v1 mirror's. */
static const char *memory_file(orch__cgroup *cg, const char **dir) {
  if (orch__cg_v2ctl(cg) & (1u << ORCH__CG_MEMORY)) { *dir = cg->fs[0]; return "memory.current"; }
  if ((*dir = cg->fs[1 + ORCH__CG_MEMORY])) return "memory.usage_in_bytes";
  return NULL;
}

static long long memory_held(orch__cgroup *cg) {
  const char *dir, *name = memory_file(cg, &dir);
  char buf[64];
  if (!name || orch__cg_read_held(&cg->acct[1], dir, name, buf, sizeof buf) <= 0) return -1;
  long long v = strtoll(buf, NULL, 10);
  return v >= (1LL << 62) ? ORCH__CG_UNLIMITED : v;
}

int orch__cg_usage(orch__cgroup *cg, long long *usage_usec, long long *memory) {
  char buf[1024];
  ssize_t r = orch__cg_read_held(&cg->acct[0], cg->fs[0], "cpu.stat", buf, sizeof buf);
  if (r < 0) return (int)r;
  *usage_usec = orch__cg_keyed(buf, "usage_usec");
  if (memory) *memory = memory_held(cg);
  return 0;
}

int orch__cg_stat(orch__cgroup *cg, orch__cg_stats *st) {
  char buf[2048];
  long long *all = (long long *)st;
  for (size_t i = 0; i < sizeof *st / sizeof(long long); i++) all[i] = -1;
  const char *d = cg->fs[0];
  ssize_t r = orch__cg_read_held(&cg->acct[0], d, "cpu.stat", buf, sizeof buf);
  if (r < 0) return (int)r;
  st->usage_usec = orch__cg_keyed(buf, "usage_usec");
  st->user_usec = orch__cg_keyed(buf, "user_usec");
  st->system_usec = orch__cg_keyed(buf, "system_usec");
  st->nr_periods = orch__cg_keyed(buf, "nr_periods");
  st->nr_throttled = orch__cg_keyed(buf, "nr_throttled");
  st->throttled_usec = orch__cg_keyed(buf, "throttled_usec");
  const char *m = cg->fs[1 + ORCH__CG_CPU];
  if (st->nr_periods < 0 && m && orch__cg_read_path(m, "cpu.stat", buf, sizeof buf) > 0) {
    st->nr_periods = orch__cg_keyed(buf, "nr_periods");
    st->nr_throttled = orch__cg_keyed(buf, "nr_throttled");
    long long ns = orch__cg_keyed(buf, "throttled_time");
    st->throttled_usec = ns < 0 ? -1 : ns / 1000;
  }
  if (orch__cg_v2ctl(cg) & (1u << ORCH__CG_MEMORY)) {
    st->memory_current = memory_held(cg);
    st->memory_peak = orch__cg_value_path(d, "memory.peak");
    st->memory_max = orch__cg_value_path(d, "memory.max");
    if (orch__cg_read_path(d, "memory.events", buf, sizeof buf) > 0) {
      st->oom = orch__cg_keyed(buf, "oom");
      st->oom_kill = orch__cg_keyed(buf, "oom_kill");
    }
  } else if ((m = cg->fs[1 + ORCH__CG_MEMORY])) {
    st->memory_current = memory_held(cg);
    st->memory_peak = orch__cg_value_path(m, "memory.max_usage_in_bytes");
    st->memory_max = orch__cg_value_path(m, "memory.limit_in_bytes");
    if (orch__cg_read_path(m, "memory.oom_control", buf, sizeof buf) > 0)
      st->oom_kill = orch__cg_keyed(buf, "oom_kill");
  }
  if (orch__cg_v2ctl(cg) & (1u << ORCH__CG_PIDS)) {
    st->pids_current = orch__cg_value_path(d, "pids.current");
    st->pids_max = orch__cg_value_path(d, "pids.max");
  } else if ((m = cg->fs[1 + ORCH__CG_PIDS])) {
    st->pids_current = orch__cg_value_path(m, "pids.current");
    st->pids_max = orch__cg_value_path(m, "pids.max");
  }
  return 0;
}

/* ---------------------------------------------------------------- limits */

static const int limit_ctl[ORCH__CG_NLIMITS] = {
  ORCH__CG_MEMORY, ORCH__CG_MEMORY, ORCH__CG_MEMORY, ORCH__CG_PIDS,
  ORCH__CG_CPU, ORCH__CG_CPU, ORCH__CG_IO
};

/* Moves every member of the cgroup into its new v1 mirror m. */
static int move_members(orch__cgroup *cg, const char *m) {
  pid_t *list;
  size_t n;
  int r = orch__cg_procs(cg, 1, &list, &n);
  if (r < 0) return r;
  char s[24];
  for (size_t i = 0; i < n && r == 0; i++) {
    snprintf(s, sizeof s, "%d", (int)list[i]);
    r = orch__cg_write_path(m, "cgroup.procs", s);
    if (r == -ESRCH) r = 0;
  }
  free(list);
  return r;
}

static void fmt_value(char *buf, size_t size, long long v, const char *max) {
  if (v < 0) snprintf(buf, size, "%s", max);
  else snprintf(buf, size, "%lld", v);
}

int orch__cg_set(orch__cgroup *cg, int limit, long long value, long long arg,
                 const char **where) {
  static const char *const v2file[ORCH__CG_NLIMITS] = {
    "memory.max", "memory.high", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight", "io.weight"
  };
  char buf[64];
  int c = limit_ctl[limit];
  *where = v2file[limit];
  orch__cg_why_clear();
  if (!(orch__cg_v2ctl(cg) & (1u << c)) && !cg->fs[1 + c]) {
    /* Offered to orch in v2: enabled down to the cgroup's parent now (the
     * v2 counterpart of a v1 mirror made at the first limit). */
    int r = orch__cg_enable_down(cg, c, where);
    if (r < 0) return r;
  }
  if (orch__cg_v2ctl(cg) & (1u << c)) {
    switch (limit) {
      case ORCH__CG_CPU_MAX:
        if (value < 0) snprintf(buf, sizeof buf, "max %lld", arg);
        else snprintf(buf, sizeof buf, "%lld %lld", value, arg);
        break;
      case ORCH__CG_IO_WEIGHT: snprintf(buf, sizeof buf, "default %lld", value); break;
      default: fmt_value(buf, sizeof buf, value, "max");
    }
    return orch__cg_write_path(cg->fs[0], v2file[limit], buf);
  }
  if (limit == ORCH__CG_MEMORY_HIGH || limit == ORCH__CG_SWAP_MAX || limit == ORCH__CG_IO_WEIGHT) {
    *where = "it needs its controller in cgroup v2 here (cgroup v1 has no equivalent)";
    return -ENOTSUP;
  }
  const orch__cg_layout *lo = orch__cg_layout_get(NULL);
  if (!lo || !lo->v1_mount[c][0]) {
    *where = "no such controller in cgroup v2 here, nor a cgroup v1 hierarchy of it";
    return -ENOTSUP;
  }
  if (!cg->fs[1 + c]) {
    int r = orch__cg_mirror(cg, cg->path, c, 1);
    if (r < 0) { *where = orch__cg_why() ? orch__cg_why() : "v1 mirror"; return r; }
    if ((r = move_members(cg, cg->fs[1 + c])) < 0) { *where = "v1 cgroup.procs"; return r; }
  }
  const char *m = cg->fs[1 + c];
  switch (limit) {
    case ORCH__CG_MEMORY_MAX:
      *where = "v1 memory.limit_in_bytes";
      fmt_value(buf, sizeof buf, value, "-1");
      return orch__cg_write_path(m, "memory.limit_in_bytes", buf);
    case ORCH__CG_PIDS_MAX:
      *where = "v1 pids.max";
      fmt_value(buf, sizeof buf, value, "max");
      return orch__cg_write_path(m, "pids.max", buf);
    case ORCH__CG_CPU_MAX: {
      *where = "v1 cpu.cfs_period_us";
      snprintf(buf, sizeof buf, "%lld", arg);
      int r = orch__cg_write_path(m, "cpu.cfs_period_us", buf);
      if (r < 0) return r;
      *where = "v1 cpu.cfs_quota_us";
      fmt_value(buf, sizeof buf, value, "-1");
      return orch__cg_write_path(m, "cpu.cfs_quota_us", buf);
    }
    case ORCH__CG_CPU_WEIGHT: {
      /* systemd's mapping: weight 100 is 1024 shares. */
      long long shares = value * 1024 / 100;
      if (shares < 2) shares = 2;
      *where = "v1 cpu.shares";
      snprintf(buf, sizeof buf, "%lld", shares);
      return orch__cg_write_path(m, "cpu.shares", buf);
    }
    default:
      return -ENOTSUP;
  }
}
