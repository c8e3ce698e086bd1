// Plain C++ Verilator harness of the kernel: no cocotb, fast (driven by hlsinf/sim/harness.py).
//
//   speed_main <run folder> [cycle limit]     one call
//   speed_main --serve                        many calls on one model: stdin lines "<run folder> <cycle limit>"
//
// A run folder holds what hlsinf/sim/harness.py wrote: `regs.txt` (lines "offset value" of
// the argument registers, hex), `mem_<bundle>.bin` (the initial image of each bundle's memory),
// `latency.txt` (read/write latency in cycles) and optionally `options.txt` (lines "key value",
// below). The harness writes the registers over AXI4-Lite, sets ap_start, polls the control
// register until ap_done like a host, reads the status register, then writes
// `out_gmem_out.bin` (the output memory, checked by the Python side against hlsinf.reference)
// and `result.txt` (call cycles, all simulated cycles, wall and CPU seconds of the simulation
// loop, the status word, and any register that did not read back its reset value after a
// reset). SPEED_DEBUG=1 in the environment prints progress on stderr.
//
// One call: a call that has not finished after `cycle limit` simulated cycles (default 50 M) is
// a hang: exit status 3. An access outside a memory: status 2. A broken AXI rule by the kernel
// (a valid dropped or a payload changed before its handshake, a wrong wlast, a burst across
// 4 KiB): status 4. With --serve the model, its state and the cycle count live on from call to
// call (no reset between calls, as on a card); each call answers one line on stdout: "ok",
// "hang", or "fail <reason>" (after "hang" or "fail" the caller should start a new process).
//
// The AXI memories are C++ models: read data `latency` cycles after the address, write
// responses `latency` cycles after the last beat, in order, at most one beat per cycle per
// bundle (the behaviour of hlsinf/sim/axi_latency.py). options.txt adds, per call:
//   seed S                        the pauses' random numbers
//   read_latency LO HI            per burst, uniform in LO..HI (overrides latency.txt)
//   write_latency LO HI
//   pause_ar P, pause_r P, pause_aw P, pause_w P, pause_b P
//                                 probability that the memory holds arready/awready/wready low,
//                                 or waits a cycle before presenting a due rvalid/bvalid (once
//                                 presented, valid stays until taken, as AXI requires)
//   pause_host P                  the same on the AXI4-Lite host's valid and ready signals
//   error <bundle> <burst> <resp> the burst-th burst (from 0) of that bundle in this call gets
//                                 response resp (2 SLVERR, 3 DECERR) on every R beat / its B;
//                                 its read data are garbage, its write data are dropped
//                                 (result.txt: "injected" has bit 0/1/2 set for each bundle
//                                 whose error burst was reached)
//   reset <cycle> <length>        ap_rst_n low for `length` cycles, `cycle` cycles after ap_start
//                                 was written; the memories drop every transaction in flight, the
//                                 host then reads every register (each must hold its reset value),
//                                 reloads the memory images and runs the call again, cleanly

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "Vhlsinf_kernel.h"
#include "verilated.h"

using Top = Vhlsinf_kernel;
static uint64_t cycle = 0;

// Register map facts (hlsinf/registers.py): control at 0, the status word, the last register.
static const uint32_t REG_CONTROL = 0x00, REG_STATUS = 0x90;

static std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// 512-bit data ports are VlWide<16> (32-bit words, little end first).
template <typename W> static void put_beat(W &wide, const uint8_t *bytes) { std::memcpy(&wide[0], bytes, 64); }
template <typename W> static void get_beat(const W &wide, uint8_t *bytes) { std::memcpy(bytes, &wide[0], 64); }

struct Rng {   // xorshift64*
    uint64_t s = 1;
    void seed(uint64_t v) { s = v * 0x9E3779B97F4A7C15ull + 0x1234567ull; if (!s) s = 1; for (int i = 0; i < 4; i++) next(); }
    uint64_t next() { s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 2685821657736338717ull; }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
    bool chance(double p) { return p > 0 && uniform() < p; }
    unsigned range(unsigned lo, unsigned hi) { return hi <= lo ? lo : lo + unsigned(next() % (hi - lo + 1)); }
};
static Rng rng;

// The first broken rule of this call (a protocol violation by the kernel or a bad address).
static std::string failure;
static void fail(const std::string &why) { if (failure.empty()) failure = why; }

struct Options {
    unsigned read_lo = 100, read_hi = 100, write_lo = 100, write_hi = 100;
    double pause_ar = 0, pause_r = 0, pause_aw = 0, pause_w = 0, pause_b = 0, pause_host = 0;
    uint64_t seed = 1;
    long error_burst[3] = {-1, -1, -1};
    unsigned error_resp[3] = {0, 0, 0};
    long reset_at = -1;
    unsigned reset_length = 0;
};

static const char *BUNDLE_NAMES[3] = {"gmem_in", "gmem_w", "gmem_out"};

struct Burst { uint64_t due, addr; unsigned beats, done, resp; };

struct Memory {
    const char *name;
    std::vector<uint8_t> bytes;
    unsigned lat_lo = 100, lat_hi = 100;
    long error_burst = -1;
    unsigned error_resp = 0;
    long bursts = 0;                             // AR or AW accepted in this call
    uint64_t last_due = 0;                       // responses leave in order
    std::deque<Burst> reads, writes, responses;  // responses: due and resp only
    // the beat / response on the bus (presented until taken)
    bool r_valid = false, r_last = false, b_valid = false;
    unsigned r_resp = 0, b_resp = 0;
    uint8_t r_data[64];

    void drop() { reads.clear(); writes.clear(); responses.clear(); r_valid = b_valid = false; last_due = 0; }
    uint8_t *at(uint64_t addr) {
        if (addr + 64 > bytes.size()) {
            std::ostringstream s;
            s << name << ": address 0x" << std::hex << addr << " outside the " << std::dec << bytes.size() << "-byte memory";
            fail(s.str());
            static uint8_t scratch[64];
            return scratch;
        }
        return &bytes[addr];
    }
    uint64_t due() {
        uint64_t d = cycle + rng.range(lat_lo, lat_hi);
        if (d < last_due) d = last_due;
        return last_due = d;
    }
    bool injected = false;                       // error_burst was reached in this call
    unsigned next_resp() {
        if (bursts++ != error_burst) return 0;
        injected = true;
        return error_resp;
    }
    // Next R beat, if none is on the bus and its burst is due.
    void prepare_read(double pause) {
        if (r_valid || reads.empty() || reads.front().due > cycle || rng.chance(pause)) return;
        Burst &b = reads.front();
        uint64_t a = (b.addr & ~uint64_t(63)) + 64ull * b.done;
        if (b.resp) std::memset(r_data, 0xE5, 64);          // an error response carries garbage
        else std::memcpy(r_data, at(a), 64);
        r_valid = true;
        r_last = b.done + 1 == b.beats;
        r_resp = b.resp;
    }
    void prepare_response(double pause) {
        if (b_valid || responses.empty() || responses.front().due > cycle || rng.chance(pause)) return;
        b_valid = true;
        b_resp = responses.front().resp;
    }
};

// What a master drove last cycle, to check that a valid stays until its handshake and the
// payload does not change meanwhile.
struct Held { bool valid = false; uint64_t addr = 0; unsigned len = 0; uint8_t data[64]; uint64_t strb = 0; bool last = false; };

static void check_burst(const char *bundle, const char *ch, uint64_t addr, unsigned len, unsigned size, unsigned burst) {
    std::ostringstream s;
    if (size != 6) s << bundle << " " << ch << "size " << size << " (expected 6: 64-byte beats)";
    else if (burst != 1) s << bundle << " " << ch << "burst " << burst << " (expected INCR)";
    else if ((addr & 4095) / 64 * 64 + 64ull * (len + 1) > 4096)
        s << bundle << " " << ch << " burst at 0x" << std::hex << addr << std::dec << " of " << len + 1 << " beats crosses 4 KiB";
    if (!s.str().empty()) fail(s.str());
}

#define DRIVE_READ(P, M, O)                                                       \
    do {                                                                          \
        M.prepare_read(O.pause_r);                                                \
        top->P##_arready = !rng.chance(O.pause_ar);                               \
        top->P##_rvalid = M.r_valid;                                              \
        top->P##_rlast = M.r_last;                                                \
        top->P##_rresp = M.r_resp;                                                \
        top->P##_rid = 0;                                                         \
        put_beat(top->P##_rdata, M.r_data);                                       \
        top->P##_awready = 0; top->P##_wready = 0; top->P##_bvalid = 0;           \
    } while (0)

#define SAMPLE_READ(P, M, AR, R, H)                                               \
    bool AR = top->P##_arvalid && top->P##_arready;                               \
    bool R = top->P##_rvalid && top->P##_rready;                                  \
    uint64_t AR##_addr = top->P##_araddr;                                         \
    unsigned AR##_len = top->P##_arlen;                                           \
    do {                                                                          \
        if (H.valid && (!top->P##_arvalid || AR##_addr != H.addr || AR##_len != H.len)) \
            fail(std::string(M.name) + ": arvalid dropped or AR changed before arready"); \
        H.valid = top->P##_arvalid && !AR; H.addr = AR##_addr; H.len = AR##_len;  \
        if (AR) check_burst(M.name, "ar", AR##_addr, AR##_len, top->P##_arsize, top->P##_arburst); \
    } while (0)

#define UPDATE_READ(M, AR, R)                                                     \
    do {                                                                          \
        if (R) {                                                                  \
            M.r_valid = false;                                                    \
            if (++M.reads.front().done == M.reads.front().beats) M.reads.pop_front(); \
        }                                                                         \
        if (AR) M.reads.push_back({M.due(), AR##_addr, AR##_len + 1u, 0, M.next_resp()}); \
    } while (0)

struct Op { enum Kind { WRITE, READ, START, POLL, STATUS, RESET_CHECK } kind; uint32_t addr, value; };

struct Result {
    uint64_t started = 0, finished = 0;
    uint32_t status = 0;
    bool reset_done = false;
    std::vector<std::pair<uint32_t, uint32_t>> reset_mismatch;   // (offset, value read)
};

struct Harness {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Top> top;
    Memory mem[3] = {{"gmem_in"}, {"gmem_w"}, {"gmem_out"}};
    Held h_in_ar, h_w_ar, h_aw, h_w;
    bool debug = std::getenv("SPEED_DEBUG") != nullptr;

    void tick(bool clk) { top->ap_clk = clk; top->eval(); }

    Harness() : ctx(new VerilatedContext) {
        ctx->randReset(2);
        top.reset(new Top(ctx.get()));
        // Inputs start random (randReset): quiet every handshake input before reset.
        quiet_inputs();
        reset(8);
    }
    void quiet_inputs() {
        top->s_axi_control_awvalid = 0; top->s_axi_control_wvalid = 0; top->s_axi_control_bready = 0;
        top->s_axi_control_arvalid = 0; top->s_axi_control_rready = 0;
        top->m_axi_gmem_in_arready = 0; top->m_axi_gmem_in_rvalid = 0; top->m_axi_gmem_in_awready = 0;
        top->m_axi_gmem_in_wready = 0; top->m_axi_gmem_in_bvalid = 0;
        top->m_axi_gmem_w_arready = 0; top->m_axi_gmem_w_rvalid = 0; top->m_axi_gmem_w_awready = 0;
        top->m_axi_gmem_w_wready = 0; top->m_axi_gmem_w_bvalid = 0;
        top->m_axi_gmem_out_arready = 0; top->m_axi_gmem_out_rvalid = 0; top->m_axi_gmem_out_awready = 0;
        top->m_axi_gmem_out_wready = 0; top->m_axi_gmem_out_bvalid = 0;
    }
    // ap_rst_n low for `length` cycles with every input quiet, the memories dropping whatever
    // was in flight (a memory in reset answers nothing), then 4 cycles out of reset.
    void reset(unsigned length) {
        quiet_inputs();
        top->ap_rst_n = 0;
        for (unsigned i = 0; i < length; i++) { tick(0); tick(1); cycle++; }
        top->ap_rst_n = 1;
        for (int i = 0; i < 4; i++) { tick(0); tick(1); cycle++; }
        for (auto &m : mem) m.drop();
        h_in_ar = h_w_ar = h_aw = h_w = Held();
    }

    // Runs one call from `dir`; returns "ok", "hang" or "fail <reason>".
    std::string call(const std::string &dir, uint64_t limit, Result &res, double &seconds, double &cpu_seconds) {
        failure.clear();
        Options o;
        { std::ifstream f(dir + "/latency.txt"); unsigned l; if (f >> l) o.read_lo = o.read_hi = o.write_lo = o.write_hi = l; }
        {
            std::ifstream f(dir + "/options.txt");
            std::string line;
            while (std::getline(f, line)) {
                std::istringstream s(line);
                std::string key; s >> key;
                if (key == "seed") s >> o.seed;
                else if (key == "read_latency") s >> o.read_lo >> o.read_hi;
                else if (key == "write_latency") s >> o.write_lo >> o.write_hi;
                else if (key == "pause_ar") s >> o.pause_ar;
                else if (key == "pause_r") s >> o.pause_r;
                else if (key == "pause_aw") s >> o.pause_aw;
                else if (key == "pause_w") s >> o.pause_w;
                else if (key == "pause_b") s >> o.pause_b;
                else if (key == "pause_host") s >> o.pause_host;
                else if (key == "reset") s >> o.reset_at >> o.reset_length;
                else if (key == "error") {
                    std::string bundle; long burst; unsigned resp; s >> bundle >> burst >> resp;
                    for (int i = 0; i < 3; i++) if (bundle == BUNDLE_NAMES[i]) { o.error_burst[i] = burst; o.error_resp[i] = resp; }
                } else if (!key.empty()) return "fail options.txt: unknown key " + key;
            }
        }
        rng.seed(o.seed);
        auto load = [&]() {
            for (int i = 0; i < 3; i++) {
                Memory &m = mem[i];
                m.bytes = read_file(dir + "/mem_" + BUNDLE_NAMES[i] + ".bin");
                m.lat_lo = i == 2 ? o.write_lo : o.read_lo;
                m.lat_hi = i == 2 ? o.write_hi : o.read_hi;
                m.error_burst = o.error_burst[i];
                m.error_resp = o.error_resp[i];
                m.bursts = 0;
                m.injected = false;
                m.drop();
            }
        };
        load();
        std::vector<std::pair<uint32_t, uint32_t>> regs;
        { std::ifstream f(dir + "/regs.txt"); uint32_t a, v; while (f >> std::hex >> a >> v) regs.push_back({a, v}); }
        if (regs.empty()) return "fail no regs.txt in " + dir;

        std::vector<Op> program;
        auto call_ops = [&]() {
            for (auto &r : regs) program.push_back({Op::WRITE, r.first, r.second});
            program.push_back({Op::START, REG_CONTROL, 1});
            program.push_back({Op::POLL, REG_CONTROL, 0});
            program.push_back({Op::STATUS, REG_STATUS, 0});
        };
        call_ops();
        size_t pc = 0;
        res = Result();
        bool reset_pending = o.reset_at >= 0;

        // AXI4-Lite host: one transaction at a time, valid raised after random gaps and then held.
        enum { ISSUE, RESP } phase = ISSUE;
        bool aw_on = false, w_on = false, aw_done = false, w_done = false, ar_on = false;

        auto t0 = std::chrono::steady_clock::now();
        std::clock_t c0 = std::clock();
        uint64_t first = cycle;
        std::string outcome;
        while (true) {
            if (pc == program.size()) { outcome = "ok"; break; }
            if (!failure.empty()) { outcome = "fail " + failure; break; }
            if (cycle - first >= limit) { outcome = "hang"; break; }
            if (reset_pending && res.started && cycle - res.started >= (uint64_t)o.reset_at) {
                reset_pending = false;
                reset(o.reset_length);
                res.reset_done = true;
                // every register back at its reset value: ap_idle alone in the control word
                program.clear(); pc = 0;
                for (uint32_t a = 0; a <= REG_STATUS; a += 4) program.push_back({Op::RESET_CHECK, a, a == REG_CONTROL ? 4u : 0u});
                load();
                call_ops();
                phase = ISSUE; aw_on = w_on = aw_done = w_done = ar_on = false;
                res.started = 0;
                continue;
            }
            const Op &op = program[pc];
            bool is_write = op.kind == Op::WRITE || op.kind == Op::START;

            // 1. memory and host outputs from the state
            DRIVE_READ(m_axi_gmem_in, mem[0], o);
            DRIVE_READ(m_axi_gmem_w, mem[1], o);
            Memory &out = mem[2];
            out.prepare_response(o.pause_b);
            top->m_axi_gmem_out_awready = !rng.chance(o.pause_aw);
            top->m_axi_gmem_out_wready = !out.writes.empty() && !rng.chance(o.pause_w);
            top->m_axi_gmem_out_bvalid = out.b_valid;
            top->m_axi_gmem_out_bresp = out.b_resp;
            top->m_axi_gmem_out_bid = 0;
            top->m_axi_gmem_out_arready = 0; top->m_axi_gmem_out_rvalid = 0;

            if (phase == ISSUE && is_write) {
                aw_on |= !aw_done && !rng.chance(o.pause_host);
                w_on |= !w_done && !rng.chance(o.pause_host);
            }
            if (phase == ISSUE && !is_write) ar_on |= !rng.chance(o.pause_host);
            top->s_axi_control_awvalid = phase == ISSUE && is_write && aw_on && !aw_done;
            top->s_axi_control_wvalid = phase == ISSUE && is_write && w_on && !w_done;
            top->s_axi_control_bready = phase == RESP && is_write && !rng.chance(o.pause_host);
            top->s_axi_control_arvalid = phase == ISSUE && !is_write && ar_on;
            top->s_axi_control_rready = phase == RESP && !is_write && !rng.chance(o.pause_host);
            top->s_axi_control_awaddr = op.addr;
            top->s_axi_control_wdata = op.value;
            top->s_axi_control_wstrb = 0xf;
            top->s_axi_control_araddr = op.addr;

            // 2. settle, 3. sample handshakes (and check the masters' AXI rules)
            tick(0);
            SAMPLE_READ(m_axi_gmem_in, mem[0], in_ar, in_r, h_in_ar);
            SAMPLE_READ(m_axi_gmem_w, mem[1], w_ar, w_r, h_w_ar);
            bool aw = top->m_axi_gmem_out_awvalid && top->m_axi_gmem_out_awready;
            uint64_t aw_addr = top->m_axi_gmem_out_awaddr;
            unsigned aw_len = top->m_axi_gmem_out_awlen;
            if (h_aw.valid && (!top->m_axi_gmem_out_awvalid || aw_addr != h_aw.addr || aw_len != h_aw.len))
                fail("gmem_out: awvalid dropped or AW changed before awready");
            h_aw.valid = top->m_axi_gmem_out_awvalid && !aw; h_aw.addr = aw_addr; h_aw.len = aw_len;
            if (aw) check_burst("gmem_out", "aw", aw_addr, aw_len, top->m_axi_gmem_out_awsize, top->m_axi_gmem_out_awburst);
            bool w = top->m_axi_gmem_out_wvalid && top->m_axi_gmem_out_wready;
            uint8_t w_data[64];
            uint64_t w_strb = top->m_axi_gmem_out_wstrb;
            bool w_last = top->m_axi_gmem_out_wlast;
            get_beat(top->m_axi_gmem_out_wdata, w_data);
            if (h_w.valid && (!top->m_axi_gmem_out_wvalid || w_strb != h_w.strb || w_last != h_w.last ||
                              std::memcmp(w_data, h_w.data, 64)))
                fail("gmem_out: wvalid dropped or W changed before wready");
            h_w.valid = top->m_axi_gmem_out_wvalid && !w; h_w.strb = w_strb; h_w.last = w_last;
            std::memcpy(h_w.data, w_data, 64);
            bool b = out.b_valid && top->m_axi_gmem_out_bready;
            bool c_aw = top->s_axi_control_awvalid && top->s_axi_control_awready;
            bool c_w = top->s_axi_control_wvalid && top->s_axi_control_wready;
            bool c_b = top->s_axi_control_bvalid && top->s_axi_control_bready;
            bool c_ar = top->s_axi_control_arvalid && top->s_axi_control_arready;
            bool c_r = top->s_axi_control_rvalid && top->s_axi_control_rready;
            uint32_t c_rdata = top->s_axi_control_rdata;

            // 4. clock edge
            tick(1);
            cycle++;

            if (debug && cycle % 20000 == 0)
                std::fprintf(stderr, "cycle %llu op %zu/%zu reads %zu/%zu writes %zu resp %zu\n",
                             (unsigned long long)cycle, pc, program.size(), mem[0].reads.size(), mem[1].reads.size(),
                             out.writes.size(), out.responses.size());
            // 5. state updates
            UPDATE_READ(mem[0], in_ar, in_r);
            UPDATE_READ(mem[1], w_ar, w_r);
            if (w) {
                Burst &head = out.writes.front();
                if (w_last != (head.done + 1 == head.beats)) fail("gmem_out: wlast on the wrong beat");
                uint8_t *dst = out.at((head.addr & ~uint64_t(63)) + 64ull * head.done);
                if (!head.resp)
                    for (int i = 0; i < 64; i++) if (w_strb >> i & 1) dst[i] = w_data[i];
                if (++head.done == head.beats) { out.responses.push_back({out.due(), 0, 0, 0, head.resp}); out.writes.pop_front(); }
            }
            if (aw) out.writes.push_back({0, aw_addr, aw_len + 1u, 0, out.next_resp()});
            if (b) { out.responses.pop_front(); out.b_valid = false; }

            if (phase == ISSUE && is_write) {
                aw_done |= c_aw; w_done |= c_w;
                if (aw_done && w_done) phase = RESP;
            } else if (phase == ISSUE && c_ar) phase = RESP;
            else if (phase == RESP && is_write && c_b) {
                if (op.kind == Op::START) res.started = cycle;
                pc++; phase = ISSUE; aw_on = w_on = aw_done = w_done = false;
            } else if (phase == RESP && !is_write && c_r) {
                phase = ISSUE; ar_on = false;
                if (op.kind == Op::POLL) {
                    if (c_rdata & 2) { res.finished = cycle; pc++; }
                } else {
                    if (op.kind == Op::STATUS) res.status = c_rdata;
                    if (op.kind == Op::RESET_CHECK && c_rdata != op.value) res.reset_mismatch.push_back({op.addr, c_rdata});
                    pc++;
                }
            }
        }
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        cpu_seconds = double(std::clock() - c0) / CLOCKS_PER_SEC;   // all threads of the process
        if (outcome != "ok") return outcome;
        for (auto &m : mem)
            if (!m.reads.empty() || !m.writes.empty() || !m.responses.empty())
                return std::string("fail ") + m.name + ": transactions still open after ap_done";
        std::ofstream(dir + "/out_gmem_out.bin", std::ios::binary).write((const char *)out_bytes().data(), out_bytes().size());
        std::ofstream r(dir + "/result.txt");
        r << "cycles " << res.finished - res.started << " total_cycles " << cycle - first << " seconds " << seconds
          << " cpu_seconds " << cpu_seconds << " status " << res.status << " reset " << int(res.reset_done)
          << " reset_mismatches " << res.reset_mismatch.size()
          << " injected " << (mem[0].injected | mem[1].injected << 1 | mem[2].injected << 2) << "\n";
        for (auto &mm : res.reset_mismatch) r << "reset_register " << mm.first << " " << mm.second << "\n";
        return "ok";
    }
    const std::vector<uint8_t> &out_bytes() { return mem[2].bytes; }
};

int main(int argc, char **argv) {
    if (argc < 2) { std::fprintf(stderr, "usage: %s <run folder> [cycle limit] | --serve\n", argv[0]); return 2; }
    Harness h;
    Result res;
    double seconds = 0, cpu = 0;
    if (std::string(argv[1]) == "--serve") {
        std::string line;
        while (std::getline(std::cin, line)) {
            std::istringstream s(line);
            std::string dir; uint64_t limit = 50'000'000;
            if (!(s >> dir)) continue;
            s >> limit;
            std::string outcome = h.call(dir, limit, res, seconds, cpu);
            std::cout << outcome << std::endl;
            if (outcome != "ok") break;
        }
        h.top->final();
        return 0;
    }
    const uint64_t limit = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 50'000'000;
    std::string outcome = h.call(argv[1], limit, res, seconds, cpu);
    if (outcome == "hang") {
        std::fprintf(stderr, "no ap_done within %llu cycles (the cycle limit)\n", (unsigned long long)limit);
        return 3;
    }
    if (outcome != "ok") {
        std::fprintf(stderr, "%s\n", outcome.c_str() + 5);
        return outcome.find("outside the") != std::string::npos ? 2 : 4;
    }
    h.top->final();
    return 0;
}
