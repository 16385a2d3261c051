/*
 * clock.c: the runtime's clock and the virtual timers.
 *
 * orch.now, orch.time, orch.sleep, task timeouts and orch.timer read the
 * runtime's clock (orch__now, orch__time, orch__vtimer_*), the real one or,
 * after orch.clock("virtual"), a virtual one for simulation testing.
 * Virtual timers sit in a binary heap ordered by (due, arming order); a
 * uv_prepare_t, active while one is armed, jumps the clock to the earliest
 * deadline once nothing else can happen first: no task is ready, no real
 * work is in flight (a live child, a libuv request) and one poll that does
 * not block brought no I/O. Real I/O goes on meanwhile on real time.
 * The heap belongs to the runtime; each vtimer struct to its owner.
 */
#include "runtime_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* ---------------------------------------------------------------- clock */

double orch__now(orch_runtime *rt) {
  if (rt->vclock) return (double)rt->vnow / 1e9;
  return (double)orch__mono_ns() / 1e9;
}

double orch__time(orch_runtime *rt) {
  if (rt->vclock) return rt->vwall + (double)(rt->vnow - rt->vbase) / 1e9;
  return orch__wall();
}

int orch__virtual(orch_runtime *rt) { return rt->vclock; }

static int vt_before(const orch__vtimer *a, const orch__vtimer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void vheap_set(orch_runtime *rt, size_t i, orch__vtimer *t) {
  rt->vheap[i] = t;
  t->pos = i + 1;
}

static void vheap_up(orch_runtime *rt, size_t i) {
  orch__vtimer *t = rt->vheap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!vt_before(t, rt->vheap[parent])) break;
    vheap_set(rt, i, rt->vheap[parent]);
    i = parent;
  }
  vheap_set(rt, i, t);
}

static void vheap_down(orch_runtime *rt, size_t i) {
  orch__vtimer *t = rt->vheap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= rt->vn) break;
    if (c + 1 < rt->vn && vt_before(rt->vheap[c + 1], rt->vheap[c])) c++;
    if (!vt_before(rt->vheap[c], t)) break;
    vheap_set(rt, i, rt->vheap[c]);
    i = c;
  }
  vheap_set(rt, i, t);
}

static void vclock_prepare(uv_prepare_t *h);

static void vprep_update(orch_runtime *rt) {
  int want = rt->vn > 0 && rt->vheap[0]->due <= rt->vhorizon && !rt->torn_down;
  if (want && !rt->vprep_active) uv_prepare_start(&rt->vprep, vclock_prepare);
  else if (!want && rt->vprep_active) uv_prepare_stop(&rt->vprep);
  rt->vprep_active = want;
}

void orch__vtimer_stop(orch_runtime *rt, orch__vtimer *t) {
  if (!t->pos) return;
  size_t i = t->pos - 1;
  t->pos = 0;
  orch__vtimer *last = rt->vheap[--rt->vn];
  if (last != t) {
    vheap_set(rt, i, last);
    vheap_up(rt, i);
    vheap_down(rt, last->pos - 1);
  }
  vprep_update(rt);
}

void orch__vtimer_start(orch_runtime *rt, orch__vtimer *t, double seconds, orch__vtimer_cb cb) {
  orch__vtimer_stop(rt, t);
  if (rt->vn == rt->vcap) {
    size_t cap = rt->vcap ? rt->vcap * 2 : 64;
    orch__vtimer **heap = realloc(rt->vheap, cap * sizeof *heap);
    if (!heap) { fprintf(stderr, "orch: out of memory (virtual timers)\n"); abort(); }
    rt->vheap = heap;
    rt->vcap = cap;
  }
  double ns = ceil(seconds * 1e9);
  if (!(ns >= 0)) ns = 0;
  if (ns > 9.0e18 - (double)rt->vnow) ns = 9.0e18 - (double)rt->vnow;
  t->due = rt->vnow + (uint64_t)ns;
  t->seq = rt->vseq++;
  t->cb = cb;
  rt->vheap[rt->vn++] = t;
  vheap_up(rt, rt->vn - 1);
  vprep_update(rt);
}

/* Nothing can happen before the next virtual deadline: no task is ready,
 * no real work is in flight (a child not reaped, an IPC wait, a libuv
 * request such as a file write), orch is not exiting. */
static int vclock_idle(orch_runtime *rt) {
  return !rt->rq_head && !rt->current && !rt->exiting && rt->holds == 0 &&
         rt->loop->active_reqs.count == 0;
}

static void vclock_prepare(uv_prepare_t *h) {
  orch_runtime *rt = h->data;
  while (rt->vprep_active && vclock_idle(rt)) {
    if (!rt->vpoked || rt->vmark != rt->resumes) {
      /* First one poll that does not block (the idle handle makes the
       * loop's timeout 0): real I/O that is ready is served before. */
      rt->vpoked = 1;
      rt->vmark = rt->resumes;
      if (!rt->idle_active) {
        uv_idle_start(&rt->idle, orch__idle_cb);
        rt->idle_active = 1;
      }
      return;
    }
    rt->vpoked = 0;
    /* Jump to the earliest deadline; run every timer due then, in the
     * order they were armed. */
    rt->vnow = rt->vheap[0]->due;
    while (rt->vn > 0 && rt->vheap[0]->due <= rt->vnow && !rt->exiting) {
      orch__vtimer *t = rt->vheap[0];
      orch__vtimer_stop(rt, t);
      t->cb(t);
    }
  }
}

/* libuv counts a timer from the loop's clock, read once a turn: a task that
 * computed for a while (or runs in a fork child, whose loop clock is the
 * parent's at fork time) would have its wait cut short by that much. The
 * clock is read again first (one vDSO clock read). */
int orch__timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms, uint64_t repeat) {
  uv_update_time(h->loop);
  return uv_timer_start(h, cb, ms, repeat);
}
