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
 *
 * On the real clock, the waits of tasks (orch.sleep, every timeout) share
 * one uv_timer_t over a wheel of milliseconds (below, "wheel"); a wait is a
 * struct in its task, armed and disarmed without allocating.
 */
#include "runtime_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* A binary heap of timers ordered by (due, arming order): the virtual
 * timers, and the real-clock waits beyond the wheel. */
static void heap_set(orch__theap *h, size_t i, orch__vtimer *t) {
  h->v[i] = t;
  t->pos = i + 1;
}

static void heap_up(orch__theap *h, size_t i) {
  orch__vtimer *t = h->v[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!vt_before(t, h->v[parent])) break;
    heap_set(h, i, h->v[parent]);
    i = parent;
  }
  heap_set(h, i, t);
}

static void heap_down(orch__theap *h, size_t i) {
  orch__vtimer *t = h->v[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && vt_before(h->v[c + 1], h->v[c])) c++;
    if (!vt_before(h->v[c], t)) break;
    heap_set(h, i, h->v[c]);
    i = c;
  }
  heap_set(h, i, t);
}

static void heap_remove(orch__theap *h, orch__vtimer *t) {
  size_t i = t->pos - 1;
  t->pos = 0;
  orch__vtimer *last = h->v[--h->n];
  if (last != t) {
    heap_set(h, i, last);
    heap_up(h, i);
    heap_down(h, last->pos - 1);
  }
}

static void heap_push(orch__theap *h, orch__vtimer *t) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    orch__vtimer **v = realloc(h->v, cap * sizeof *v);
    if (!v) { fprintf(stderr, "orch: out of memory (timers)\n"); abort(); }
    h->v = v;
    h->cap = cap;
  }
  h->v[h->n++] = t;
  heap_up(h, h->n - 1);
}

static void vclock_prepare(uv_prepare_t *h);

static void vprep_update(orch_runtime *rt) {
  int want = rt->vh.n > 0 && rt->vh.v[0]->due <= rt->vhorizon && !rt->torn_down;
  if (want && !rt->vprep_active) uv_prepare_start(&rt->vprep, vclock_prepare);
  else if (!want && rt->vprep_active) uv_prepare_stop(&rt->vprep);
  rt->vprep_active = want;
}

void orch__vtimer_stop(orch_runtime *rt, orch__vtimer *t) {
  if (!t->pos) return;
  heap_remove(&rt->vh, t);
  vprep_update(rt);
}

void orch__vtimer_start(orch_runtime *rt, orch__vtimer *t, double seconds, orch__vtimer_cb cb) {
  orch__vtimer_stop(rt, t);
  double ns = ceil(seconds * 1e9);
  if (!(ns >= 0)) ns = 0;
  if (ns > 9.0e18 - (double)rt->vnow) ns = 9.0e18 - (double)rt->vnow;
  t->due = rt->vnow + (uint64_t)ns;
  t->seq = rt->vseq++;
  t->cb = cb;
  heap_push(&rt->vh, t);
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
    rt->vnow = rt->vh.v[0]->due;
    while (rt->vh.n > 0 && rt->vh.v[0]->due <= rt->vnow && !rt->exiting) {
      orch__vtimer *t = rt->vh.v[0];
      orch__vtimer_stop(rt, t);
      t->cb(t);
    }
  }
}

/* The loop time (uv_now's milliseconds) at which a wait of ms from now is
 * due, so that it never ends before ms have passed by orch.now().
 *
 * libuv counts a timer from the loop's clock: the monotonic clock (or its
 * coarse version, which is never ahead of it) in whole milliseconds rounded
 * down, and read once a turn. Counted from it, a wait ended up to a
 * millisecond early by orch.now() whenever the loop woke during it (the
 * last poll's timeout was counted from a rounded-down clock: a sleep of
 * 20 ms with a 1 ms ticker beside it ended early in 118 of 300, at 19.14 ms
 * at worst; proc_wait_group_spec's 0.1 s group-wait timeout was seen to
 * end before orch.now() - t0 >= 0.1 under ASan), and by a whole turn's
 * length after a task computed for a while (or in a fork child, whose loop
 * clock is the parent's at fork time). So the due time is counted from the
 * next whole millisecond of the monotonic clock, read now (one vDSO
 * read): when the loop's clock reaches it, at least ms have passed. */
static uint64_t due_ms(uv_loop_t *loop, uint64_t ms) {
  /* A wait of 0 (a poll) is due at once, at the loop's next timers. */
  if (ms == 0) return uv_now(loop);
  uint64_t now = (orch__mono_ns() + 999999) / 1000000;
  return ms > UINT64_MAX / 2 - now ? UINT64_MAX / 2 : now + ms;
}

/* The same for a task's wait of seconds: due at the first whole
 * millisecond at or after now + seconds, its end rounded up once, where
 * due_ms(ceil(seconds in ms)) rounds up both the clock and the wait (a
 * wait then ended 0-2 ms after its time, 1 on average, now 0-1; the
 * watchdog's detection latency, a wait until each deadline, grew by 1-2
 * ms with the two, tenth session in doc/benchmarks.md). Never early: when
 * the loop's clock (the monotonic clock rounded down) reaches the due
 * millisecond, the monotonic clock is past now + seconds. Waits of a
 * million seconds and more keep whole milliseconds (no nanosecond count
 * to overflow). */
static uint64_t due_after(uv_loop_t *loop, double seconds) {
  if (!(seconds > 0)) return uv_now(loop);
  if (seconds >= 1e6) {
    double ms = ceil(seconds * 1000.0);
    return due_ms(loop, ms > 9.0e15 ? (uint64_t)9.0e15 : (uint64_t)ms);
  }
  uint64_t end = orch__mono_ns() + (uint64_t)ceil(seconds * 1e9);
  return end / 1000000 + (end % 1000000 != 0);
}

/* ---------------------------------------------------------------- the waits' clock */

/* A task's wait (a sleep, a timeout) is due at the first whole millisecond
 * at or after now + seconds, which took a read of the monotonic clock a
 * wait: a vDSO call of 25-50 ns on this VM, about 4 of the 80 ms a burst of
 * 100,000 sleeping tasks took to make and start (thirteenth session in
 * doc/benchmarks.md). The processor's time stamp counter is
 * cheaper to read (rdtsc, 10-20 ns), and where it runs at a fixed rate
 * (the invariant counter of x86-64 processors since about 2008) it bounds
 * the time passed since the last read of the clock: the last read (taken
 * just after the counter's value kept with it) is a lower bound of now;
 * that read plus the counter's ticks since, counted at twice their
 * measured rate, plus WC_SLACK_NS (an rdtsc's place among its neighbours,
 * the counters' skew between processors), an upper bound. When the wait
 * ends in the same millisecond counted from either bound, that
 * millisecond is the one a read of the clock anywhere in between would
 * give, and the clock is not read; otherwise (a millisecond's end between
 * the two: about once a millisecond, as the upper bound drifts away; a
 * counter that went back) it is read, and becomes the new lower bound.
 * The rate is measured between reads at least WC_CAL_NS apart, and used
 * once two measurements in a row agree within an eighth: a counter that
 * runs slower than the clock (it would make a wait early) is never taken,
 * one that runs faster only makes the upper bound looser. The counter is
 * used only where the kernel itself makes the monotonic clock from it
 * (the current clocksource is "tsc", read once, when the rate is first
 * known): the
 * kernel has then checked that the processors' counters agree, and a
 * virtual machine's pause stops the clock and the counter alike. Elsewhere
 * (kvm-clock, hpet, acpi_pm, a file that cannot be read, no invariant
 * counter, another processor) and with ORCH_WAIT_CLOCK=read in the
 * environment, every wait reads the clock. */
#if defined(__x86_64__) && !defined(ORCH_NO_TSC)
#include <cpuid.h>
#include <x86intrin.h>
#define WC_TSC 1
#endif
#define WC_SLACK_NS 2000
#define WC_CAL_NS 1000000

#ifdef WC_TSC
static int wc_invariant(void) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0x80000000, NULL) < 0x80000007) return 0;
  if (!__get_cpuid(0x80000007, &a, &b, &c, &d)) return 0;
  return (d >> 8) & 1;
}

#define WC_CLOCKSOURCE "/sys/devices/system/clocksource/clocksource0/current_clocksource"

/* Whether the counter may bound the waits' clock (above). The file is
 * opened, at EMFILE, with one of the runtime's spare fds. */
static int wc_usable(void) {
  const char *env = getenv("ORCH_WAIT_CLOCK");
  if (env && strcmp(env, "read") == 0) return 0;
  if (!wc_invariant()) return 0;
  int fd = orch__fd_open_at(AT_FDCWD, WC_CLOCKSOURCE, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0, NULL);
  if (fd < 0) {
    orch__fd_spare_settle();
    return 0;
  }
  char buf[16];
  ssize_t n;
  do n = read(fd, buf, sizeof buf); while (n < 0 && errno == EINTR);
  close(fd);
  orch__fd_spare_settle();
  return n == 4 && memcmp(buf, "tsc\n", 4) == 0;
}

/* ns a tick, twice, 32.32; 0 if the figures make no sense. */
static uint64_t wc_rate(uint64_t dns, uint64_t dtsc) {
  if (dtsc == 0 || dns == 0) return 0;
  double m = (double)dns / (double)dtsc * 2.0 * 4294967296.0;
  return m >= 1.0 && m < 1.0e12 ? (uint64_t)m : 0;
}

/* A read of the clock for a wait: the new lower bound, and a measurement
 * of the counter's rate when the last is WC_CAL_NS old. */
static uint64_t wc_read(orch_runtime *rt) {
  if (rt->wc_state < 0) return orch__mono_ns();
  uint64_t tsc = __rdtsc();
  uint64_t ns = orch__mono_ns();
  if (rt->wc_state == 0) {
    rt->wc_state = 1;
    rt->wc_cal_ns = ns;
    rt->wc_cal_tsc = tsc;
  } else if (ns - rt->wc_cal_ns >= WC_CAL_NS) {
    uint64_t m = tsc > rt->wc_cal_tsc ? wc_rate(ns - rt->wc_cal_ns, tsc - rt->wc_cal_tsc) : 0;
    uint64_t last = rt->wc_state == 2 ? rt->wc_mult : rt->wc_cal_mult;
    if (m && last && m <= last + last / 8 && m + m / 8 >= last) {
      /* Whether the counter may be used at all is asked only now (the
       * CPUID and the clocksource's file: a VM exit and three system
       * calls), once: a short-lived orch (`orch ctl ping`) never asks. */
      if (!rt->wc_usable) rt->wc_usable = wc_usable() ? 1 : -1;
      if (rt->wc_usable < 0) {
        rt->wc_state = -1;
        return ns;
      }
      rt->wc_mult = m > last ? m : last;
      rt->wc_state = 2;
    } else {
      rt->wc_mult = 0;          /* (none in use until two agree again) */
      rt->wc_state = 1;
    }
    rt->wc_cal_mult = m;
    rt->wc_cal_ns = ns;
    rt->wc_cal_tsc = tsc;
  }
  rt->wc_tsc = tsc;
  rt->wc_ns = ns;
  return ns;
}
#endif

/* The loop time (ms) a task's wait of seconds is due: as due_after. */
static uint64_t wait_due(orch_runtime *rt, double seconds) {
  if (!(seconds > 0) || seconds >= 1e6) return due_after(rt->loop, seconds);
  uint64_t d = (uint64_t)ceil(seconds * 1e9);
#ifdef WC_TSC
  if (rt->wc_mult) {
    uint64_t dt = __rdtsc() - rt->wc_tsc;
    if (dt < (1ull << 32)) {
      uint64_t lo = rt->wc_ns + d, hi = lo + ((dt * rt->wc_mult) >> 32) + WC_SLACK_NS;
      uint64_t due = lo / 1000000 + (lo % 1000000 != 0);
      if (hi / 1000000 + (hi % 1000000 != 0) == due) return due;
    }
  }
  uint64_t end = wc_read(rt) + d;
#else
  uint64_t end = orch__mono_ns() + d;
#endif
  return end / 1000000 + (end % 1000000 != 0);
}

/* (libuv's timer is due at its loop's time + the timeout, whenever that
 * time was last read.) */
int orch__timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms, uint64_t repeat) {
  return uv_timer_start(h, cb, due_ms(h->loop, ms) - uv_now(h->loop), repeat);
}

/* The same with its first firing due as a task's wait is (due_after: the
 * first whole millisecond at or after now + seconds). orch.timer.after
 * went through orch__timer_start with its wait rounded to the nearest
 * millisecond, counted from the next whole millisecond: rounded twice, it
 * fired up to 0.5 ms before its time by orch.now() (at once below 0.5 ms),
 * or a millisecond after the first whole one past its end. */
int orch__timer_start_after(uv_timer_t *h, uv_timer_cb cb, double seconds, uint64_t repeat) {
  return uv_timer_start(h, cb, due_after(h->loop, seconds) - uv_now(h->loop), repeat);
}

/* ---------------------------------------------------------------- wheel */

/* The waits of tasks on the real clock (a sleep, a timeout) share one
 * uv_timer_t. A wait due within WHEEL_SLOTS ms of the wheel's cursor sits
 * in the list of its millisecond's slot (appended: arming order), one due
 * later in the far heap, from which it moves into its slot as soon as the
 * cursor comes within WHEEL_SLOTS of it (before any wait of the same
 * millisecond can be armed directly into the slot, so a slot stays in
 * arming order). One due before the cursor (a millisecond already run)
 * goes to the late list, run at the next turn. Arming and disarming are
 * O(1) list operations on memory the wait owns: no allocation, no handle
 * to close, and firing 100,000 waits does not walk a 100,000-node heap
 * for each. The uv timer is armed for the earliest slot (re-armed only
 * for an earlier wait) and stopped when no wait is left, so it keeps the
 * loop alive exactly while a wait is armed, as a timer per wait did. */

#define WHEEL_MASK (ORCH__WHEEL_SLOTS - 1)
#define NOT_ARMED UINT64_MAX

static void wheel_cb(uv_timer_t *h);

static void list_append(orch__wlist *l, orch__wtimer *t) {
  t->next = NULL;
  t->prev = l->tail;
  if (l->tail) l->tail->next = t; else l->head = t;
  l->tail = t;
}

static void list_unlink(orch__wlist *l, orch__wtimer *t) {
  if (t->prev) t->prev->next = t->next; else l->head = t->next;
  if (t->next) t->next->prev = t->prev; else l->tail = t->prev;
  t->prev = t->next = NULL;
}

static orch__wlist *slot_of(orch_runtime *rt, uint64_t due) {
  return &rt->wheel[due & WHEEL_MASK];
}

static void mark(orch_runtime *rt, uint64_t due, int on) {
  uint64_t bit = 1ULL << (due & 63);
  if (on) rt->wbits[(due & WHEEL_MASK) >> 6] |= bit;
  else rt->wbits[(due & WHEEL_MASK) >> 6] &= ~bit;
}

/* Puts an armed wait where its due time says (see above). */
static void place(orch_runtime *rt, orch__wtimer *t) {
  if (t->h.due < rt->wcur) {
    t->where = ORCH__W_LATE;
    list_append(&rt->wlate, t);
  } else if (t->h.due - rt->wcur < ORCH__WHEEL_SLOTS) {
    t->where = ORCH__W_SLOT;
    list_append(slot_of(rt, t->h.due), t);
    mark(rt, t->h.due, 1);
    rt->wslotted++;
  } else {
    t->where = ORCH__W_FAR;
    heap_push(&rt->wfar, &t->h);
  }
}

/* The far waits the cursor has come within reach of go to their slots. */
static void migrate(orch_runtime *rt) {
  while (rt->wfar.n > 0 && rt->wfar.v[0]->due < rt->wcur + ORCH__WHEEL_SLOTS) {
    orch__wtimer *t = (orch__wtimer *)rt->wfar.v[0];   /* its first member */
    heap_remove(&rt->wfar, &t->h);
    place(rt, t);
  }
}

/* The first millisecond from the cursor whose slot holds a wait (the
 * wheel must not be empty). */
static uint64_t next_slot(orch_runtime *rt) {
  size_t words = ORCH__WHEEL_SLOTS / 64, start = rt->wcur & WHEEL_MASK;
  for (size_t k = 0; k <= words; k++) {
    size_t w = ((start >> 6) + k) % words;
    uint64_t bits = rt->wbits[w];
    if (k == 0) bits &= ~0ULL << (start & 63);
    if (bits) {
      size_t idx = w * 64 + (size_t)__builtin_ctzll(bits);
      return rt->wcur + ((idx - start) & WHEEL_MASK);
    }
  }
  return NOT_ARMED;
}

/* Arms the uv timer for the earliest wait, or stops it when none is left. */
static void rearm(orch_runtime *rt) {
  uint64_t due;
  if (rt->wlate.head) due = 0;
  else if (rt->wslotted) due = next_slot(rt);
  else if (rt->wfar.n) due = rt->wfar.v[0]->due;
  else due = NOT_ARMED;
  if (due == NOT_ARMED) {
    if (rt->warmed != NOT_ARMED) uv_timer_stop(&rt->wtimer);
    rt->warmed = NOT_ARMED;
    return;
  }
  uint64_t now = uv_now(rt->loop);
  rt->warmed = due;
  uv_timer_start(&rt->wtimer, wheel_cb, due > now ? due - now : 0, 0);
}

void orch__wtimer_stop(orch_runtime *rt, orch__wtimer *t) {
  switch (t->where) {
    case ORCH__W_NONE: return;
    case ORCH__W_LATE: list_unlink(&rt->wlate, t); break;
    case ORCH__W_SLOT: {
      orch__wlist *l = slot_of(rt, t->h.due);
      list_unlink(l, t);
      if (!l->head) mark(rt, t->h.due, 0);
      rt->wslotted--;
      break;
    }
    case ORCH__W_FAR: heap_remove(&rt->wfar, &t->h); break;
  }
  t->where = ORCH__W_NONE;
  /* An earlier wake-up than needed is harmless; one with nothing left to
   * wait for would keep the loop alive. */
  if (!rt->wlate.head && !rt->wslotted && !rt->wfar.n) rearm(rt);
}

void orch__wtimer_start(orch_runtime *rt, orch__wtimer *t, double seconds, orch__vtimer_cb cb) {
  orch__wtimer_stop(rt, t);
  if (!rt->wheel) {
    rt->wheel = calloc(ORCH__WHEEL_SLOTS, sizeof *rt->wheel);
    if (!rt->wheel) { fprintf(stderr, "orch: out of memory (timers)\n"); abort(); }
  }
  /* The loop's time of this turn: the due time is read afresh (due_after). */
  uint64_t now = uv_now(rt->loop);
  /* An idle wheel's cursor catches up with the clock at once. */
  if (!rt->wslotted && !rt->wlate.head && rt->wcur <= now) {
    rt->wcur = now;
    migrate(rt);
  }
  t->h.due = wait_due(rt, seconds);
  t->h.seq = rt->wseq++;
  t->h.cb = cb;
  place(rt, t);
  /* The uv timer is armed for the earliest wait or earlier (a stop does
   * not re-arm it): only an earlier one re-arms it. */
  uint64_t due = t->where == ORCH__W_LATE ? 0 : t->h.due;
  if (rt->warmed == NOT_ARMED || due < rt->warmed) {
    rt->warmed = due;
    uv_timer_start(&rt->wtimer, wheel_cb, due > now ? due - now : 0, 0);
  }
}

/* Takes t off list l (a slot's when slot is set) and runs it. */
static void fire(orch_runtime *rt, orch__wlist *l, orch__wtimer *t, int slot) {
  list_unlink(l, t);
  if (slot) {
    rt->wslotted--;
    if (!l->head) mark(rt, t->h.due, 0);
  }
  t->where = ORCH__W_NONE;
  t->h.cb(&t->h);
}

/* Waking a task reads its struct, its coroutine and the registry's slot
 * that anchors it: memory gone cold since its wait began (a sleeping task
 * of a burst is 1.4 KiB of it), which made the processor wait on memory at
 * each step of each wake-up. So, before a wait's task runs, the processor
 * is asked for what the next waits of its list will read, one stage each:
 * the struct of the fifth (from its address alone), the coroutine of the
 * fourth (whose struct came a turn ago), and so on to the function of the
 * first (orch__task_prefetch). All read from the live list before the task runs:
 * whatever its wake-up stops or frees, the next turn reads it again. */
static void ahead(orch__wtimer *t) {
  orch__wtimer *n1 = t->next, *n2 = n1 ? n1->next : NULL, *n3 = n2 ? n2->next : NULL;
  orch__wtimer *n4 = n3 ? n3->next : NULL, *n5 = n4 ? n4->next : NULL;
  if (n5) orch__task_prefetch(n5, 0);
  if (n4) orch__task_prefetch(n4, 1);
  if (n3) orch__task_prefetch(n3, 2);
  if (n2) orch__task_prefetch(n2, 3);
  if (n1) orch__task_prefetch(n1, 4);
}

static void wheel_cb(uv_timer_t *h) {
  orch_runtime *rt = h->data;
  rt->warmed = NOT_ARMED;
  uint64_t now = uv_now(rt->loop), seq = rt->wseq;
  /* One at a time from the live lists: a callback may stop a later wait
   * (cancel a task) or arm one (due in a millisecond already run: the late
   * list, for the next turn). */
  while (rt->wlate.head && rt->wlate.head->h.seq < seq) {
    ahead(rt->wlate.head);
    fire(rt, &rt->wlate, rt->wlate.head, 0);
  }
  while (rt->wcur <= now) {
    uint64_t ms = rt->wslotted ? next_slot(rt) : NOT_ARMED;
    if (ms > now) {
      rt->wcur = now + 1;
      migrate(rt);
      break;
    }
    rt->wcur = ms + 1;
    migrate(rt);
    orch__wlist *l = slot_of(rt, ms);
    /* A wait due WHEEL_SLOTS ms later shares the slot, after these. */
    while (l->head && l->head->h.due == ms) {
      ahead(l->head);
      fire(rt, l, l->head, 1);
    }
  }
  rearm(rt);
  orch__gc_settle(rt);
}

/* Stops and forgets every wait (a fork child's handles were stopped). */
void orch__wheel_reset(orch_runtime *rt) {
  rt->warmed = NOT_ARMED;
}

void orch__wheel_init(orch_runtime *rt) {
  uv_timer_init(rt->loop, &rt->wtimer);
  rt->wtimer.data = rt;
  rt->warmed = NOT_ARMED;
}

void orch__wheel_free(orch_runtime *rt) {
  free(rt->wheel);
  rt->wheel = NULL;
  free(rt->wfar.v);
  rt->wfar.v = NULL;
  rt->wfar.n = rt->wfar.cap = 0;
}
