/*
 * runtime_int.h: what the runtime's own files share (runtime.c, task.c,
 * clock.c, budget.c, l_core.c, searcher.c): the runtime and task structs and
 * the scheduler's internal calls. Binding modules use runtime.h only.
 */
#ifndef ORCH_RUNTIME_INT_H
#define ORCH_RUNTIME_INT_H

#include <stdint.h>

#include "runtime.h"

#define TASK_MT "orch.Task"

enum { T_READY, T_RUNNING, T_WAITING, T_DONE, T_FAILED, T_CANCELLED };

/* The one uservalue of an orch.Task userdata: its coroutine (its function
 * while a task made without arguments waits for its first run, co NULL). A
 * finished task's coroutine holds its outcome: its results, or its error
 * object and traceback (task.c). */
enum { UVAL_CO = 1, UVAL_NSLOTS = UVAL_CO };

/* A binary heap of timers ordered by (due, arming order) (clock.c). */
typedef struct { orch__vtimer **v; size_t n, cap; } orch__theap;

/* A task's wait on the real clock (clock.c: the wheel). The struct lives
 * in the task (zeroed: not armed) and is stopped before its memory goes. */
#define ORCH__WHEEL_SLOTS 1024      /* milliseconds; a power of 2 */
enum { ORCH__W_NONE, ORCH__W_LATE, ORCH__W_SLOT, ORCH__W_FAR };
typedef struct orch__wtimer orch__wtimer;
struct orch__wtimer {
  /* h.due: the loop time (ms) it is due; h.seq: arming order; h.pos: its
   * place in the far heap (which orders orch__vtimer pointers: h is the
   * first member); h.cb: called with &h when it fires; h.data: the
   * owner's. One struct for the wheel and the far heap keeps a sleeping
   * task 24 bytes smaller. */
  orch__vtimer h;
  orch__wtimer *prev, *next;    /* in its slot's list or the late list */
  int where;                    /* ORCH__W_* */
};
typedef struct { orch__wtimer *head, *tail; } orch__wlist;

/* A task is its orch.Task userdata: one per task, alive at once by the
 * hundred thousand, so it is kept small (flags in bytes, one timer): at
 * most 200 bytes, so that the userdata (Lua's 56-byte header with one
 * uservalue) is a small block of orch's allocator (src/lalloc.c). */
struct orch__task {
  lua_State *co;
  orch_runtime *rt;
  int ref;                  /* its key in the anchors while unfinished (task.c) */
  unsigned char status;     /* T_* */
  unsigned char awaiting;   /* suspended inside orch__await */
  unsigned char sleeping;   /* the timer ends the wait with no values */
  unsigned char waking;     /* resumed by the runtime, not by coroutine.resume */
  unsigned char exit_yield; /* suspended by orch.exit: never resumed */
  unsigned char self_cancel;/* called task:cancel() on itself */
  unsigned char queued;     /* in the ready queue */
  unsigned char vtimed;     /* the timer is the virtual clock's */
  union {
    int nargs;              /* values its next (or running) resume passes */
    int nres;               /* when done: results left on co's stack */
  };
  unsigned gc_held;         /* bytes of it the collector counts only at its end (task.c) */
  uint32_t budget_us;       /* task:set_budget: 0 the runtime's, TASK_NO_BUDGET none, else its own (us) */
  orch__task *joining;      /* the task this one waits for in :join() */
  orch__task *joiners;      /* the tasks waiting in :join() for this one */
  orch__task *join_next;    /* the next in joining's joiners */
  orch__cancel_fn cancel;
  void *cancel_data;
  const char *timeout_op;
  union {                   /* the timeout: one wait at a time, on one clock */
    orch__wtimer w;         /* the real clock's wheel */
    orch__vtimer v;         /* the virtual clock */
  } timer;
  orch__task *prev, *next;  /* ready queue (doubly linked) */
  orch__task *all_prev, *all_next;  /* every unfinished task */
  uint64_t cpu_limit_ns;    /* task:set_cpu_limit; 0: none */
  uint64_t cpu_ns;          /* CPU time used while a limit was set */
};

#define MAX_HOOKS 16
#define BUDGET_COUNT 1000           /* VM instructions between clock reads */
#define BUDGET_DEFAULT_NS 5000000000ULL
#define BUDGET_COARSE_NS 1000000000ULL
#define TASK_NO_BUDGET UINT32_MAX
typedef struct { orch__hook_fn fn; void *data; } hook;

struct orch_runtime {
  uv_loop_t loop_storage;
  uv_loop_t *loop;
  lua_State *L;
  int own_state;
  uv_idle_t idle;
  int idle_active;
  uv_async_t holder;        /* ref'd while something holds the loop */
  int holds;
  orch__task *rq_head, *rq_tail;
  orch__task *all;          /* unfinished tasks */
  orch__task *current;
  orch__task *main_task;
  int main_ref;             /* registry ref to the main task userdata */
  int host_run;             /* inside orch.run(fn): the main task's cancel ends the run */
  int running;              /* inside uv_run */
  int exiting, exit_code;
  char *last_error;
  orch_error_fn on_error;
  void *on_error_ud;
  hook close_hooks[MAX_HOOKS];
  int nclose_hooks;
  hook fork_hooks[MAX_HOOKS];
  int nfork_hooks;
  void *slots[ORCH__SLOT_MAX];
  int torn_down;
  uint64_t budget_ns;       /* 0: no budget */
  uint64_t budget_run_ns;   /* the running resume's: its task's own (task:set_budget) or budget_ns */
  volatile uint64_t budget_start;  /* when the running callback was resumed; 0: none */
  lua_State *volatile running_co;  /* the coroutine running Lua now (a task's, or one it resumed) */
  uint64_t budget_trip;     /* when it was interrupted; 0: not yet */
  /* The budget counts the loop thread's CPU time, not the wall clock: a
   * machine so loaded that orch waits on the run queue must not interrupt
   * legitimate work. The CPU clock costs a system call, so it is read at a
   * resume only when the last reading is over BUDGET_CPU_MARK_NS old:
   * budget_cpu_start (<= the CPU clock at the resume's start) may count up
   * to that much CPU from before the resume (an error towards tripping
   * early). Wall time is an upper bound of CPU time: the CPU clock is read
   * again only once the wall clock says the budget may be used up. With a
   * budget of BUDGET_COARSE_NS or more, budget_start is read from the
   * coarse monotonic clock (a tick, 4 ms at HZ 250, at most behind: the
   * wall time is then overstated, which only makes the CPU clock read
   * sooner, and the CPU mark is refreshed at most a tick late, up to 0.5%
   * of such a budget towards tripping early): one resume of every task
   * reads the fine clock otherwise, 20 ns of the 1 us a sleeping task's
   * first resume costs. */
  volatile uint64_t budget_cpu_start;
  uint64_t cpu_mark, cpu_mark_wall;
  uint64_t task_cpu_mark;   /* the thread CPU clock at the running task's resume, when it has a CPU limit */
  int fork_child;           /* orch.fork's child: its loop's end is the process's */
  /* The virtual clock (see the opening comment). */
  int vclock;               /* orch.clock("virtual") */
  uint64_t vnow;            /* its monotonic time, ns */
  double vwall;             /* orch.time() when vnow was vbase */
  uint64_t vbase;
  uint64_t vhorizon;        /* deadlines past it do not keep the loop alive */
  orch__theap vh;
  uint64_t vseq;
  uv_prepare_t vprep;
  /* At each turn of the loop while a spare fd is out (fdlimit.c): takes
   * back the spares where fds are free again. Unref'd; started when a
   * spare goes out (runtime.c), stopped by itself once they are whole. */
  uv_check_t spares;
  unsigned long long spare_turns;   /* the turns it ran (orch.fd.spares) */
  orch_runtime *spares_next;        /* the process's runtimes (runtime.c) */
  int vprep_active;
  int vpoked;               /* a poll that does not block ran since... */
  uint64_t vmark;           /* ...this count of resumes */
  uint64_t resumes;
  /* The real-clock waits of tasks (clock.c, "wheel"). */
  uv_timer_t wtimer;
  uint64_t warmed;          /* loop ms it is armed for; UINT64_MAX: not */
  orch__wlist *wheel;       /* ORCH__WHEEL_SLOTS lists, made at first use */
  uint64_t wbits[ORCH__WHEEL_SLOTS / 64];   /* slots that hold a wait */
  uint64_t wcur;            /* the first millisecond not run yet */
  size_t wslotted;          /* waits in the slots */
  orch__wlist wlate;        /* waits due in a millisecond already run */
  orch__theap wfar;         /* waits beyond the slots */
  uint64_t wseq;
  /* The waits' clock (clock.c, wait_due): the last read of the monotonic
   * clock for a wait and the time stamp counter just before it, the
   * counter's rate (ns a tick, twice over, in 32.32 fixed point; 0: not
   * measured yet), the read the next measurement counts from and the
   * last measurement, and its state (0: no read yet; 1: measuring the
   * rate; 2: in use; -1: every wait reads the clock). */
  uint64_t wc_ns, wc_tsc, wc_mult, wc_cal_ns, wc_cal_tsc, wc_cal_mult;
  int wc_state;
  int wc_usable;            /* the counter may be used: 0 not asked yet, 1 yes, -1 no */
  int ncopool;              /* finished coroutines kept for new tasks (task.c) */
  long gc_debt;             /* bytes of task memory owed to the collector's debt (task.c) */
  long gc_live;             /* bytes the unfinished tasks hold from the collector (task.c) */
  unsigned char gc_burst;   /* a burst of tasks is alive: the ended ones' bytes wait (task.c) */
  unsigned char gc_drain;   /* a burst ended: its bytes drive one cycle in small steps (task.c) */
  unsigned gc_drain_steps;  /* steps of that cycle so far (task.c) */
  uint64_t gc_drain_resumes; /* rt->resumes at the last tick of the drain (task.c) */
  /* The heap growth of a new task object and of a new coroutine, learnt
   * from their first GC_SAMPLES creations (task.c). */
  unsigned gc_size[2], gc_samples[2];
  int fn_nups_ok;           /* a closure's upvalue count read from its header: checks passed; < 0: never (task.c) */
  lua_State *anchor_L;      /* the thread whose first slot is the tasks' anchors (task.c) */
  int anchor_last;          /* the largest anchor key given so far (task.c) */
  int anchor_free;          /* the first free anchor key; 0: none (task.c) */
  uv_timer_t purge;         /* gives back the Lua allocator's empty pages (runtime.c) */
  uv_timer_t gc_tick;       /* drains a burst's bytes while the loop has nothing else to do (task.c) */
};

/* The registry key of the runtime's light userdata (&orch__rt_key; the
 * sentinel that frees a host-bound runtime sits at &orch__rt_key + 1). */
extern const char orch__rt_key;

static inline orch__task **extra(lua_State *co) { return (orch__task **)lua_getextraspace(co); }

/* task.c: the ready queue and the list of unfinished tasks. */
void orch__queue_push(orch__task *t, int nargs);
void orch__queue_remove(orch__task *t);
void orch__all_remove(orch__task *t);
void orch__task_gc_release(orch__task *t);
void orch__gc_settle(orch_runtime *rt);     /* counts ended tasks' memory */
void orch__idle_cb(uv_idle_t *h);      /* drains the ready queue */

/* task.c: a task's life. */
int orch__push_task(lua_State *L, orch__task *t);    /* [-0,+1] its userdata (nil once ended); returns 1 */
void orch__task_unanchor(orch__task *t);              /* the collector may take it (ended, abandoned) */
orch__task *orch__task_new(lua_State *L, int nargs);
void orch__task_cancel(orch__task *t);
void orch__join_begin(orch__task *self, orch__task *t);   /* self waits in t:join() */
void orch__task_stop_timer(orch__task *t);
void orch__task_prefetch(const orch__wtimer *w, int stage);  /* warms w's waiting task */
void orch__cancel_leftovers(orch_runtime *rt);
int orch__await_k(lua_State *L, int status, lua_KContext ctx);
int orch__wait_begin(orch__task *t, double timeout, const char *op,
                     orch__cancel_fn cancel, void *data);

/* clock.c: the wheel of real-clock task waits. */
void orch__wtimer_start(orch_runtime *rt, orch__wtimer *t, double seconds, orch__vtimer_cb cb);
void orch__wtimer_stop(orch_runtime *rt, orch__wtimer *t);
void orch__wheel_init(orch_runtime *rt);
void orch__wheel_reset(orch_runtime *rt);
void orch__wheel_free(orch_runtime *rt);

/* budget.c: the count hook of the time budget and of CPU limits. */
void orch__budget_hook(lua_State *L, lua_Debug *ar);
int orch__budget_begin(orch_runtime *rt);
uint64_t orch__task_budget_ns(const orch__task *t);
void orch__task_set_budget(orch__task *t, double seconds);
void orch__budget_mark(orch_runtime *rt);
void orch__budget_forget(orch_runtime *rt);
void orch__budget_init(lua_State *L, orch_runtime *rt);
uint64_t orch__thread_cpu_ns(void);
uint64_t orch__task_cpu_ns(const orch__task *t);

/* searcher.c: require "orch.x" from the orch Lua directories. */
void orch__install_searcher(lua_State *L);
int orch__l_precompiled(lua_State *L);   /* orch._precompiled (searcher.c) */

/* runtime.c: runs the loop (an orch.fork child ends there). */
int orch__run_loop(orch_runtime *rt);

#endif
