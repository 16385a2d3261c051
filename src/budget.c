/*
 * budget.c: the Lua time budget and task CPU limits (one count hook).
 *
 * Time budget: Lua that never yields would hold the loop for good (no
 * signal, reap or control request is served meanwhile). While a task runs,
 * a count hook (every BUDGET_COUNT VM instructions) reads the monotonic clock;
 * past the budget (in CPU time of the loop thread: see budget_used) it
 * raises an error in the running code (catchable, so a
 * caller's pcall can report which callback it was); code that keeps running
 * after that for the grace period gets the error at every instruction, which
 * no pcall can absorb.
 *
 * The hook costs a call per VM instruction while it is set, so it is set
 * only once the budget may be exceeded: a POSIX timer (one per process,
 * delivering ORCH__BUDGET_SIGNAL to the loop thread) is armed when a resume
 * starts and none is armed, for the budget. When it fires, its handler (in
 * the loop thread, like lua.c's SIGINT handler) looks at the resume running
 * then: started at least the budget ago, it sets the count hook on the
 * coroutine running at that moment (the task's, or one the task resumed:
 * coroutine.resume and coroutine.wrap note it, below); started later, it
 * re-arms the timer for that resume's end; no resume running, it leaves the
 * timer unarmed. A resume shorter than the budget pays a clock read and,
 * at most once a budget, one timer_settime. The timer runs on the loop
 * thread's CPU clock (the budget counts CPU time): it advances only while
 * the thread runs, so the timer a burst of work armed never fires once the
 * loop waits, and an idle orch gets no signal (on a monotonic clock it
 * woke the loop once, up to a budget after every burst). Where no timer can
 * be made, or for a runtime on another thread than the timer's, the hook
 * is set for every resume.
 *
 * CPU limit (task:set_cpu_limit): a task with a limit has the thread's CPU
 * clock read at each resume and yield, and the same count hook raises in it
 * at every check once the CPU time it used passes the limit. Tasks without
 * one pay nothing.
 */
#include "runtime_int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* ---------------------------------------------------------------- time budget */

static uint64_t budget_grace(const orch_runtime *rt) {
  uint64_t g = rt->budget_run_ns / 10;
  if (g < 10000000ULL) g = 10000000ULL;
  if (g > 1000000000ULL) g = 1000000000ULL;
  return g;
}

uint64_t orch__thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The CPU time task t used so far (it may be running). */
uint64_t orch__task_cpu_ns(const orch__task *t) {
  if (t->rt->current == t && t->cpu_limit_ns) return t->cpu_ns + (orch__thread_cpu_ns() - t->rt->task_cpu_mark);
  return t->cpu_ns;
}

/* The CPU time of the loop thread since the start of the running resume
 * is at most the wall time since then, and at most the CPU clock now less
 * budget_cpu_start: the smaller, read only once the wall time is past the
 * budget (the wall clock is cheap, the CPU clock a system call).
 * Async-signal-safe (clock_gettime is). */
#define BUDGET_CPU_MARK_NS 1000000ULL
static uint64_t budget_used(const orch_runtime *rt, uint64_t now) {
  uint64_t wall = now - rt->budget_start;
  if (wall < rt->budget_run_ns) return wall;
  uint64_t cpu = orch__thread_cpu_ns() - rt->budget_cpu_start;
  return cpu < wall ? cpu : wall;
}

void orch__budget_mark(orch_runtime *rt) {
  if (!rt->cpu_mark_wall || rt->budget_start - rt->cpu_mark_wall > BUDGET_CPU_MARK_NS) {
    rt->cpu_mark = orch__thread_cpu_ns();
    rt->cpu_mark_wall = rt->budget_start;
  }
  rt->budget_cpu_start = rt->cpu_mark;
}

/* ---------------------------------------------------------------- the alarm */

/* Process-wide: one timer, one handler. The fields the handler reads are
 * written by the loop thread it interrupts (volatile: read in the handler
 * as they are in memory). */
static struct {
  orch_runtime *volatile rt;  /* whose resume is timed (the last to start one) */
  volatile sig_atomic_t armed;
  volatile uint64_t due;      /* when it fires (the thread's CPU clock, ns), while armed */
  int made;                   /* the timer exists in this process */
  pthread_t thread;           /* whose CPU clock it runs on and who gets the signal */
  timer_t id;
} alarm_st;
static int alarm_ok = 1;      /* 0: no timer could be made: hook every resume */

/* Async-signal-safe: arms the timer ns of the thread's CPU time from now
 * (now: the thread's CPU clock). */
static void alarm_set(uint64_t now, uint64_t ns) {
  if (ns == 0) ns = 1;
  alarm_st.due = now + ns;
  alarm_st.armed = 1;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  its.it_value.tv_sec = (time_t)(ns / 1000000000ULL);
  its.it_value.tv_nsec = (long)(ns % 1000000000ULL);
  timer_settime(alarm_st.id, 0, &its, NULL);
}

static void on_alarm(int sig, siginfo_t *si, void *uc) {
  (void)sig; (void)si; (void)uc;
  if (!alarm_st.made) return;   /* sent by someone else before any timer */
  int saved = errno;
  orch_runtime *rt = alarm_st.rt;
  alarm_st.armed = 0;
  if (rt && rt->budget_run_ns && rt->budget_start) {
    uint64_t now = orch__mono_ns(), used = budget_used(rt, now);
    if (used < rt->budget_run_ns) {
      /* The rest of the budget is at least that much CPU time away. */
      alarm_set(orch__thread_cpu_ns(), rt->budget_run_ns - used);
    } else if (rt->running_co) {
      lua_sethook(rt->running_co, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
    }
  }
  errno = saved;
}

/* rt is going away: the alarm must not look at it any more (a timer armed
 * for one of its resumes may still fire). */
void orch__budget_forget(orch_runtime *rt) {
  if (alarm_st.rt == rt) alarm_st.rt = NULL;
}

/* A fork child has no timer (POSIX timers are not inherited). */
static void alarm_forked(void) {
  alarm_st.made = 0;
  alarm_st.armed = 0;
}

static int handler_set;

/* The handler is installed with the runtime (so the signal, sent by
 * anyone, never ends orch by its default action); the timer at the first
 * resume with a budget. */
static void alarm_handler(void) {
  if (handler_set) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_alarm;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (sigaction(ORCH__BUDGET_SIGNAL, &sa, NULL) < 0) return;
  pthread_atfork(NULL, NULL, alarm_forked);
  handler_set = 1;
}

static int alarm_make(void) {
  if (!handler_set) return -1;
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = ORCH__BUDGET_SIGNAL;
  sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
  if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &alarm_st.id) < 0) return -1;
  alarm_st.thread = pthread_self();
  /* The loop thread must take it even if a script's mask was copied. */
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, ORCH__BUDGET_SIGNAL);
  pthread_sigmask(SIG_UNBLOCK, &one, NULL);
  alarm_st.made = 1;
  return 0;
}

/* A resume of rt starts with its budget clock (rt->budget_start) set:
 * 1 when the alarm watches it, 0 when the caller must set the hook. */
int orch__budget_begin(orch_runtime *rt) {
  /* The timer counts its own thread's CPU time only. */
  if (alarm_st.made && !pthread_equal(alarm_st.thread, pthread_self())) return 0;
  alarm_st.rt = rt;
  uint64_t end = rt->budget_cpu_start + rt->budget_run_ns;
  /* Armed for this resume's end or earlier (the handler then re-arms it for
   * the rest): nothing to do. Later (a budget made shorter since): sooner. */
  if (alarm_st.armed && alarm_st.due <= end) return 1;
  if (!alarm_ok) return 0;
  if (!alarm_st.made && alarm_make() < 0) {
    alarm_ok = 0;
    return 0;
  }
  alarm_set(rt->budget_cpu_start, rt->budget_run_ns);
  return 1;
}

/* The running resume's budget changed (task:set_budget, orch.set_budget):
 * the alarm looks again once the new one may be used up (one that fires
 * sooner re-arms itself for the rest; 0: the hook removes itself). */
static void budget_retime(orch_runtime *rt, uint64_t ns) {
  rt->budget_run_ns = ns;
  /* Interrupted already, but within the new budget: not any more. */
  if (rt->budget_trip && ns > budget_used(rt, orch__mono_ns())) rt->budget_trip = 0;
  if (ns && alarm_st.made && pthread_equal(alarm_st.thread, pthread_self())) {
    uint64_t now = orch__thread_cpu_ns();
    uint64_t end = rt->budget_cpu_start + ns;
    alarm_st.rt = rt;
    if (!alarm_st.armed || alarm_st.due > end) alarm_set(now, end > now ? end - now : 1);
  }
}

/* ---------------------------------------------------------------- coroutines */

/* coroutine.resume and coroutine.wrap as Lua 5.4's own (lcorolib.c), which
 * also note the coroutine running (rt->running_co) for the alarm. */
static int co_auxresume(lua_State *L, orch_runtime *rt, lua_State *co, int narg) {
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  lua_State *prev = rt->running_co;
  rt->running_co = co;
  /* Past the budget already: whatever this task runs is counted. */
  if (rt->budget_start && rt->budget_trip) lua_sethook(co, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  status = lua_resume(co, L, narg, &nres);
  rt->running_co = prev;
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

static int co_resume(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD);
  lua_State *co = lua_tothread(L, 1);
  int r = co_auxresume(L, lua_touserdata(L, lua_upvalueindex(1)), co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = co_auxresume(L, lua_touserdata(L, lua_upvalueindex(2)), co, lua_gettop(L));
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {
      stat = lua_resetthread(co);
      lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, co_auxwrap, 2);
  return 1;
}

void orch__budget_init(lua_State *L, orch_runtime *rt) {
  alarm_handler();
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, co_resume, 1);
    lua_setfield(L, -2, "resume");
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, co_wrap, 1);
    lua_setfield(L, -2, "wrap");
  }
  lua_pop(L, 1);
}

/* The count hook: a no-op unless the running callback is over its budget
 * (or its task over its CPU limit). */
void orch__budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &orch__rt_key);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  orch__task *cur = rt ? rt->current : NULL;
  if (cur && cur->cpu_limit_ns && orch__task_cpu_ns(cur) > cur->cpu_limit_ns) {
    luaL_where(L, 0);
    lua_pushfstring(L, "orch: task used more than %f s of CPU time (its CPU limit)",
                    (double)cur->cpu_limit_ns / 1e9);
    lua_concat(L, 2);
    lua_error(L);
  }
  /* A coroutine left with the every-instruction hook by an earlier
   * interruption goes back to the cheap one. */
  if (lua_gethookcount(L) == 1 && !(rt && rt->budget_start && rt->budget_trip))
    lua_sethook(L, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  /* A hook the alarm left on a coroutine in an earlier resume goes, unless
   * this task's CPU limit needs it. */
  int limited = cur && cur->cpu_limit_ns;
  if (!rt || !rt->budget_run_ns || !rt->budget_start) {
    if (!limited && alarm_ok) lua_sethook(L, NULL, 0, 0);
    return;
  }
  uint64_t now = orch__mono_ns();
  if (!rt->budget_trip) {
    uint64_t used = budget_used(rt, now);
    if (used < rt->budget_run_ns) {
      if (!limited && alarm_ok) {
        lua_sethook(L, NULL, 0, 0);
        /* Waited on the run queue rather than ran: the alarm looks again
         * once the rest of the budget may be used up. */
        if (alarm_st.made && (!alarm_st.armed || alarm_st.due > now + (rt->budget_run_ns - used)))
          alarm_set(now, rt->budget_run_ns - used);
      }
      return;
    }
    rt->budget_trip = now;
    /* The error may be caught by a coroutine.resume of the task's: the
     * task's own coroutine is counted from now on too. */
    if (rt->current && rt->current->co != L)
      lua_sethook(rt->current->co, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  } else if (now - rt->budget_trip < budget_grace(rt)) {
    return;
  } else {
    lua_sethook(L, orch__budget_hook, LUA_MASKCOUNT, 1);
  }
  lua_Debug d;
  const char *what = "Lua code";
  char desc[160];
  if (lua_getstack(L, 0, &d) && lua_getinfo(L, "nS", &d)) {
    if (d.what && strcmp(d.what, "main") == 0)
      snprintf(desc, sizeof desc, "the main chunk of %s", d.short_src);
    else if (d.name)
      snprintf(desc, sizeof desc, "%s '%s' (%s:%d)", d.namewhat, d.name, d.short_src, d.linedefined);
    else
      snprintf(desc, sizeof desc, "function <%s:%d>", d.short_src, d.linedefined);
    what = desc;
  }
  luaL_where(L, 0);
  lua_pushfstring(L, "orch: %s ran for more than %f s without yielding (Lua time budget)",
                  what, (double)rt->budget_run_ns / 1e9);
  lua_concat(L, 2);
  lua_error(L);
}

void orch_set_budget(orch_runtime *rt, double seconds) {
  if (!(seconds > 0)) rt->budget_ns = 0;
  else if (seconds > 1e9) rt->budget_ns = (uint64_t)1e18;
  else rt->budget_ns = (uint64_t)(seconds * 1e9);
  /* The running resume, if its task follows the runtime's, at once. */
  if (rt->budget_start && (!rt->current || !rt->current->budget_us)) budget_retime(rt, rt->budget_ns);
}

/* The budget task t's resumes run with: its own (task:set_budget) or the
 * runtime's; 0: none. */
uint64_t orch__task_budget_ns(const orch__task *t) {
  if (!t->budget_us) return t->rt->budget_ns;
  if (t->budget_us == TASK_NO_BUDGET) return 0;
  return (uint64_t)t->budget_us * 1000ULL;
}

/* task:set_budget: seconds > 0 its own, 0 none, < 0 the runtime's again.
 * On the running task it applies to the resume running now, if that one is
 * timed (a task with none gets its budget from its next resume). */
void orch__task_set_budget(orch__task *t, double seconds) {
  if (seconds < 0) t->budget_us = 0;
  else if (seconds == 0) t->budget_us = TASK_NO_BUDGET;
  else if (seconds * 1e6 >= (double)(TASK_NO_BUDGET - 1)) t->budget_us = TASK_NO_BUDGET - 1;
  else if (seconds * 1e6 < 1) t->budget_us = 1;
  else t->budget_us = (uint32_t)(seconds * 1e6);
  orch_runtime *rt = t->rt;
  if (rt->current == t && rt->budget_start) budget_retime(rt, orch__task_budget_ns(t));
}

double orch_get_budget(orch_runtime *rt) { return (double)rt->budget_ns / 1e9; }
