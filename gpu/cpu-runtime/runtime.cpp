// runtime.cpp: runs a CUDA kernel compiled with cuda_cpu.h on the calling
// OS thread: blocks one after another, the threads of a block as fibers
// with a real barrier for __syncthreads (see the execution model in
// cuda_cpu.h).

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdlib>
#include <vector>

#define CUDA_CPU_NO_MATH_MACROS
#include "cuda_cpu.h"

namespace cuda_cpu {

thread_local uint3 thread_idx{0, 0, 0};
thread_local uint3 block_idx{0, 0, 0};
thread_local dim3 block_dim;
thread_local dim3 grid_dim;

Math math = {::expf, ::logf, ::tanhf, ::cosf};

namespace {

// Stack of one fiber (one CUDA thread that waits at a barrier, or the
// runner of a block's threads), below it one PROT_NONE guard page: a stack
// overflow faults instead of corrupting memory.
constexpr std::size_t STACK_BYTES = 256 * 1024;

struct Fiber {
    ucontext_t ctx;
    void* mem = nullptr;
    std::size_t bytes = 0;
    std::size_t guard = 0;
};

enum class State : unsigned char { NotStarted, Running, AtBarrier, Done };

struct Engine {
    ucontext_t sched;               // the launching OS thread's own context
    std::vector<Fiber*> all;        // every fiber made on this OS thread
    std::vector<Fiber*> free;       // fibers not in use
    const fdgr_cpu_kernel* kernel = nullptr;
    void** args = nullptr;
    unsigned n = 0;                 // threads per block
    unsigned next = 0;              // next thread of the block to start
    unsigned cur = 0;               // the CUDA thread running now
    std::vector<State> state;       // per thread of the block
    std::vector<Fiber*> fiber_of;   // the fiber each started thread runs on
    Fiber* starting = nullptr;      // the fiber a new runner starts on
    Fiber* finished = nullptr;      // a runner that has returned
    bool active = false;            // inside a launch
    unsigned long long runners = 0;   // fibers started, this launch
    unsigned long long barriers = 0;  // block-wide barriers passed, this launch

    ~Engine() {
        for (Fiber* f : all) {
            munmap(f->mem, f->bytes);
            delete f;
        }
    }
};

thread_local Engine engine;

Fiber* take_fiber(Engine& e) {
    if (!e.free.empty()) {
        Fiber* f = e.free.back();
        e.free.pop_back();
        return f;
    }
    const long page = sysconf(_SC_PAGESIZE);
    const std::size_t guard = page > 0 ? static_cast<std::size_t>(page) : 4096;
    const std::size_t bytes = STACK_BYTES + guard;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    if (mprotect(mem, guard, PROT_NONE) != 0) {
        munmap(mem, bytes);
        return nullptr;
    }
    Fiber* f = new Fiber;
    f->mem = mem;
    f->bytes = bytes;
    f->guard = guard;
    e.all.push_back(f);
    return f;
}

void set_thread(Engine& e, unsigned t) {
    e.cur = t;
    const unsigned bx = block_dim.x, by = block_dim.y;
    thread_idx = uint3{t % bx, (t / bx) % by, t / (bx * by)};
}

// A runner: starts the block's threads that have not started yet, in order,
// each as a plain call. When one of them waits at a barrier, this fiber
// stays with it and the scheduler starts a new runner for the rest.
void runner() {
    Engine& e = engine;
    Fiber* const f = e.starting;
    while (e.next < e.n) {
        const unsigned t = e.next++;
        e.state[t] = State::Running;
        e.fiber_of[t] = f;
        set_thread(e, t);
        e.kernel->thread(e.args);
        e.state[t] = State::Done;
    }
    e.finished = f;
    // returning resumes uc_link: the scheduler
}

void reap(Engine& e) {
    if (e.finished) {
        e.free.push_back(e.finished);
        e.finished = nullptr;
    }
}

void format(char* err, std::size_t len, const char* fmt, ...) {
    if (!err || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

// Runs the block blockIdx; false (and a message) on a divergent barrier or
// when no fiber stack can be mapped.
bool run_block(Engine& e, char* err, std::size_t errlen) {
    e.next = 0;
    for (unsigned t = 0; t < e.n; ++t) {
        e.state[t] = State::NotStarted;
        e.fiber_of[t] = nullptr;
    }
    // every thread up to its first barrier, or to its end
    while (e.next < e.n) {
        Fiber* f = take_fiber(e);
        if (!f) {
            format(err, errlen, "cannot map a fiber stack");
            return false;
        }
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = static_cast<char*>(f->mem) + f->guard;
        f->ctx.uc_stack.ss_size = STACK_BYTES;
        f->ctx.uc_link = &e.sched;
        makecontext(&f->ctx, runner, 0);
        e.starting = f;
        ++e.runners;
        swapcontext(&e.sched, &f->ctx);
        reap(e);
    }
    // then the barriers, one at a time
    for (;;) {
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < e.n; ++t) {
            waiting += e.state[t] == State::AtBarrier;
            done += e.state[t] == State::Done;
        }
        if (waiting == 0) return true;
        if (done != 0) {
            format(err, errlen,
                   "__syncthreads reached by %u of the %u threads of block (%u, %u, %u) while "
                   "%u had returned (a barrier in divergent code is undefined in CUDA)",
                   waiting, e.n, block_idx.x, block_idx.y, block_idx.z, done);
            for (unsigned t = 0; t < e.n; ++t) {
                if (e.state[t] == State::AtBarrier) e.free.push_back(e.fiber_of[t]);
            }
            return false;
        }
        ++e.barriers;
        for (unsigned t = 0; t < e.n; ++t) {
            if (e.state[t] != State::AtBarrier) continue;
            e.state[t] = State::Running;
            set_thread(e, t);
            swapcontext(&e.sched, &e.fiber_of[t]->ctx);
            reap(e);
        }
    }
}

}  // namespace

void sync_threads() {
    Engine& e = engine;
    if (!e.active) {
        std::fprintf(stderr, "cuda_cpu: __syncthreads called outside a kernel launch\n");
        std::abort();
    }
    const unsigned t = e.cur;
    e.state[t] = State::AtBarrier;
    swapcontext(&e.fiber_of[t]->ctx, &e.sched);
    // resumed by run_block, which has set cur and threadIdx again
}

}  // namespace cuda_cpu

// Installs the transcendental functions the kernels call (before any
// launch; see cuda_cpu.h).
extern "C" void fdgr_cpu_set_math(float (*exp)(float), float (*log)(float),
                                  float (*tanh)(float), float (*cos)(float)) noexcept {
    cuda_cpu::math = cuda_cpu::Math{exp, log, tanh, cos};
}

// What one launch did.
struct fdgr_cpu_stats {
    unsigned long long blocks;    // blocks run
    unsigned long long threads;   // CUDA threads run
    unsigned long long barriers;  // block-wide barriers passed (summed over blocks)
    unsigned long long fibers;    // fibers started (one per block without barriers)
};

// Launches `k` with `grid` and `block` (x, y, z each) and `args` (one
// pointer per parameter, to a value of its type: cuLaunchKernel's
// kernelParams). Returns 0, or -1 with a message in err.
extern "C" int fdgr_cpu_launch(const fdgr_cpu_kernel* k, const unsigned* grid,
                               const unsigned* block, void** args, fdgr_cpu_stats* stats,
                               char* err, std::size_t errlen) noexcept {
    using namespace cuda_cpu;
    Engine& e = engine;
    if (e.active) {
        format(err, errlen, "%s: launch from inside a kernel", k->name);
        return -1;
    }
    const unsigned long long threads =
        static_cast<unsigned long long>(block[0]) * block[1] * block[2];
    // CUDA's limits (compute capability 9.0)
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || threads == 0 || block[0] > 1024 ||
        block[1] > 1024 || block[2] > 64 || threads > 1024 || grid[0] > 0x7fffffffu ||
        grid[1] > 65535 || grid[2] > 65535) {
        format(err, errlen, "%s: invalid launch configuration grid (%u, %u, %u) block (%u, %u, %u)",
               k->name, grid[0], grid[1], grid[2], block[0], block[1], block[2]);
        return -1;
    }
    e.kernel = k;
    e.args = args;
    e.n = static_cast<unsigned>(threads);
    e.state.assign(e.n, State::NotStarted);
    e.fiber_of.assign(e.n, nullptr);
    e.runners = 0;
    e.barriers = 0;
    e.active = true;
    grid_dim = dim3(grid[0], grid[1], grid[2]);
    block_dim = dim3(block[0], block[1], block[2]);
    unsigned long long blocks = 0;
    int rc = 0;
    for (unsigned z = 0; z < grid[2] && rc == 0; ++z) {
        for (unsigned y = 0; y < grid[1] && rc == 0; ++y) {
            for (unsigned x = 0; x < grid[0]; ++x) {
                block_idx = uint3{x, y, z};
                if (!run_block(e, err, errlen)) {
                    rc = -1;
                    break;
                }
                ++blocks;
            }
        }
    }
    e.active = false;
    if (stats) {
        stats->blocks = blocks;
        stats->threads = blocks * threads;
        stats->barriers = e.barriers;
        stats->fibers = e.runners;
    }
    if (rc != 0) {
        // prefix the kernel's name
        char msg[512];
        std::snprintf(msg, sizeof msg, "%s: %s", k->name, err ? err : "");
        format(err, errlen, "%s", msg);
    }
    return rc;
}
