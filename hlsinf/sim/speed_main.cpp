// Plain C++ Verilator harness of the kernel: one call, no cocotb, fast (driven by hlsinf/sim/harness.py).
//
//   speed_main <run folder> [cycle limit]
//
// The folder holds what hlsinf/sim/harness.py wrote: `regs.txt` (lines "offset value" of
// the control registers, hex), `mem_<bundle>.bin` (the initial image of each bundle's memory)
// and `latency.txt` (read/write latency in cycles). The harness writes the registers over
// AXI4-Lite, sets ap_start, runs until ap_done (polled through the register like a host),
// then writes `out_gmem_out.bin` (the output memory, checked by the Python side against
// hlsinf.reference) and `result.txt` (call cycles, all simulated cycles, wall and CPU seconds
// of the simulation loop). SPEED_DEBUG=1 in the environment prints progress on stderr.
// A call that has not finished after `cycle limit` simulated cycles (default 50 M) is a hang:
// the harness says so on stderr and exits with status 3. Each memory is as large as its
// image file (VGG16's largest activations, 64 x 224 x 224 int8, are 3.2 MB); an access
// outside it ends the run with status 2.
//
// The AXI memories are C++ models with the same behaviour as hlsinf/sim/axi_latency.py: read data
// `latency` cycles after the address, write responses `latency` cycles after the last beat,
// at most one beat per cycle per bundle.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "Vhlsinf_kernel.h"
#include "verilated.h"

using Top = Vhlsinf_kernel;
static uint64_t cycle = 0;

static std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// 512-bit data ports are VlWide<16> (32-bit words, little end first).
template <typename W> static void put_beat(W &wide, const uint8_t *bytes) { std::memcpy(&wide[0], bytes, 64); }
template <typename W> static void get_beat(const W &wide, uint8_t *bytes) { std::memcpy(bytes, &wide[0], 64); }

struct Burst { uint64_t due, addr; unsigned beats, done; };

struct Memory {
    const char *name;
    std::vector<uint8_t> bytes;
    unsigned latency;
    std::deque<Burst> reads, writes, responses;   // responses: due only
    bool r_valid = false;
    uint8_t r_data[64];
    bool r_last = false;

    uint8_t *at(uint64_t addr) {
        if (addr + 64 > bytes.size()) {
            std::fprintf(stderr, "%s: address %llx outside the %zu-byte memory\n", name,
                         (unsigned long long)addr, bytes.size());
            std::exit(2);
        }
        return &bytes[addr];
    }
    // Next R beat on the bus, if its burst is due.
    void prepare_read() {
        r_valid = false;
        if (!reads.empty() && reads.front().due <= cycle) {
            Burst &b = reads.front();
            uint64_t a = (b.addr & ~uint64_t(63)) + 64ull * b.done;
            std::memcpy(r_data, at(a), 64);
            r_valid = true;
            r_last = b.done + 1 == b.beats;
        }
    }
};

#define DRIVE_READ(P, M)                                                          \
    do {                                                                          \
        M.prepare_read();                                                         \
        top->P##_arready = 1;                                                     \
        top->P##_rvalid = M.r_valid;                                              \
        top->P##_rlast = M.r_last;                                                \
        top->P##_rresp = 0;                                                       \
        top->P##_rid = 0;                                                         \
        put_beat(top->P##_rdata, M.r_data);                                       \
    } while (0)

#define SAMPLE_READ(P, M, AR, R)                                                  \
    bool AR = top->P##_arvalid && top->P##_arready;                               \
    bool R = top->P##_rvalid && top->P##_rready;                                  \
    uint64_t AR##_addr = top->P##_araddr;                                         \
    unsigned AR##_len = top->P##_arlen

#define UPDATE_READ(M, AR, R)                                                     \
    do {                                                                          \
        if (R && ++M.reads.front().done == M.reads.front().beats) M.reads.pop_front(); \
        if (AR) M.reads.push_back({cycle + M.latency, AR##_addr, AR##_len + 1u, 0}); \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) { std::fprintf(stderr, "usage: %s <run folder> [cycle limit]\n", argv[0]); return 2; }
    std::string dir = argv[1];
    const uint64_t limit = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 50'000'000;
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->randReset(2);
    auto top = std::make_unique<Top>(ctx.get());

    unsigned latency = 100;
    { std::ifstream f(dir + "/latency.txt"); f >> latency; }
    Memory in{"gmem_in", read_file(dir + "/mem_gmem_in.bin"), latency};
    Memory wm{"gmem_w", read_file(dir + "/mem_gmem_w.bin"), latency};
    Memory out{"gmem_out", read_file(dir + "/mem_gmem_out.bin"), latency};
    std::vector<std::pair<uint32_t, uint32_t>> regs;
    { std::ifstream f(dir + "/regs.txt"); uint32_t o, v; while (f >> std::hex >> o >> v) regs.push_back({o, v}); }
    regs.push_back({0x00, 1});                  // ap_start last

    // AXI4-Lite host: one write at a time, then poll the control register.
    size_t next_reg = 0;
    enum { IDLE, WRITE, RESP, READ, READ_WAIT, DONE } lite = IDLE;
    uint64_t started = 0, finished = 0;
    bool w_aw_done = false, w_w_done = false;

    // Write side of gmem_out: AW queue, W beats against the head AW.
    auto tick = [&](bool clk) { top->ap_clk = clk; top->eval(); };
    // Inputs start random (randReset): quiet every handshake input before reset.
    top->s_axi_control_awvalid = 0; top->s_axi_control_wvalid = 0; top->s_axi_control_bready = 0;
    top->s_axi_control_arvalid = 0; top->s_axi_control_rready = 0;
    top->m_axi_gmem_in_arready = 0; top->m_axi_gmem_in_rvalid = 0; top->m_axi_gmem_in_awready = 0;
    top->m_axi_gmem_in_wready = 0; top->m_axi_gmem_in_bvalid = 0;
    top->m_axi_gmem_w_arready = 0; top->m_axi_gmem_w_rvalid = 0; top->m_axi_gmem_w_awready = 0;
    top->m_axi_gmem_w_wready = 0; top->m_axi_gmem_w_bvalid = 0;
    top->m_axi_gmem_out_arready = 0; top->m_axi_gmem_out_rvalid = 0; top->m_axi_gmem_out_awready = 0;
    top->m_axi_gmem_out_wready = 0; top->m_axi_gmem_out_bvalid = 0;
    top->ap_rst_n = 0;
    for (int i = 0; i < 8; i++) { tick(0); tick(1); }
    top->ap_rst_n = 1;
    for (int i = 0; i < 4; i++) { tick(0); tick(1); }

    const bool debug = std::getenv("SPEED_DEBUG") != nullptr;   // progress lines on stderr
    auto t0 = std::chrono::steady_clock::now();
    std::clock_t c0 = std::clock();
    while (lite != DONE && cycle < limit) {
        // 1. slave and host outputs from the state
        DRIVE_READ(m_axi_gmem_in, in);
        DRIVE_READ(m_axi_gmem_w, wm);
        top->m_axi_gmem_out_awready = 1;
        top->m_axi_gmem_out_wready = !out.writes.empty();
        bool b_due = !out.responses.empty() && out.responses.front().due <= cycle;
        top->m_axi_gmem_out_bvalid = b_due;
        top->m_axi_gmem_out_bresp = 0;
        top->m_axi_gmem_out_bid = 0;
        // the read-only and write-only halves are tied off in the kernel; keep inputs quiet
        top->m_axi_gmem_in_awready = 0; top->m_axi_gmem_in_wready = 0; top->m_axi_gmem_in_bvalid = 0;
        top->m_axi_gmem_w_awready = 0; top->m_axi_gmem_w_wready = 0; top->m_axi_gmem_w_bvalid = 0;
        top->m_axi_gmem_out_arready = 0; top->m_axi_gmem_out_rvalid = 0;

        top->s_axi_control_awvalid = lite == WRITE && !w_aw_done;
        top->s_axi_control_wvalid = lite == WRITE && !w_w_done;
        top->s_axi_control_bready = lite == RESP;
        top->s_axi_control_arvalid = lite == READ;
        top->s_axi_control_rready = lite == READ_WAIT;
        if (lite == WRITE) {
            top->s_axi_control_awaddr = regs[next_reg].first;
            top->s_axi_control_wdata = regs[next_reg].second;
            top->s_axi_control_wstrb = 0xf;
        }
        top->s_axi_control_araddr = 0;

        // 2. settle, 3. sample handshakes
        tick(0);
        SAMPLE_READ(m_axi_gmem_in, in, in_ar, in_r);
        SAMPLE_READ(m_axi_gmem_w, wm, w_ar, w_r);
        bool aw = top->m_axi_gmem_out_awvalid && top->m_axi_gmem_out_awready;
        uint64_t aw_addr = top->m_axi_gmem_out_awaddr;
        unsigned aw_len = top->m_axi_gmem_out_awlen;
        bool w = top->m_axi_gmem_out_wvalid && top->m_axi_gmem_out_wready;
        uint8_t w_data[64];
        uint64_t w_strb = top->m_axi_gmem_out_wstrb;
        get_beat(top->m_axi_gmem_out_wdata, w_data);
        bool b = b_due && top->m_axi_gmem_out_bready;
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
            std::fprintf(stderr, "cycle %llu lite %d reg %zu reads %zu/%zu writes %zu resp %zu ctrl %x arvalid %d/%d\n",
                         (unsigned long long)cycle, (int)lite, next_reg, in.reads.size(), wm.reads.size(),
                         out.writes.size(), out.responses.size(), c_rdata, (int)top->m_axi_gmem_in_arvalid,
                         (int)top->m_axi_gmem_w_arvalid);
        // 5. state updates
        UPDATE_READ(in, in_ar, in_r);
        UPDATE_READ(wm, w_ar, w_r);
        if (w) {
            Burst &head = out.writes.front();
            uint8_t *dst = out.at((head.addr & ~uint64_t(63)) + 64ull * head.done);
            for (int i = 0; i < 64; i++) if (w_strb >> i & 1) dst[i] = w_data[i];
            if (++head.done == head.beats) { out.responses.push_back({cycle + out.latency, 0, 0, 0}); out.writes.pop_front(); }
        }
        if (aw) out.writes.push_back({0, aw_addr, aw_len + 1u, 0});
        if (b) out.responses.pop_front();

        if (lite == IDLE) { lite = WRITE; w_aw_done = w_w_done = false; }
        else if (lite == WRITE) {
            w_aw_done |= c_aw; w_w_done |= c_w;
            if (w_aw_done && w_w_done) lite = RESP;
        } else if (lite == RESP && c_b) {
            if (regs[next_reg].first == 0 && regs[next_reg].second == 1) { started = cycle; lite = READ; }
            else { next_reg++; lite = WRITE; w_aw_done = w_w_done = false; }
        } else if (lite == READ && c_ar) lite = READ_WAIT;
        else if (lite == READ_WAIT && c_r) {
            static int shown = 0;
            if (debug && shown++ < 5) std::fprintf(stderr, "cycle %llu control %x\n", (unsigned long long)cycle, c_rdata);
            if (c_rdata & 2) { finished = cycle; lite = DONE; }
            else lite = READ;
        }
    }
    auto t1 = std::chrono::steady_clock::now();
    double seconds = std::chrono::duration<double>(t1 - t0).count();
    double cpu_seconds = double(std::clock() - c0) / CLOCKS_PER_SEC;   // all threads of the process
    if (lite != DONE) {
        std::fprintf(stderr, "no ap_done after %llu cycles (the cycle limit)\n", (unsigned long long)cycle);
        return 3;
    }
    std::ofstream(dir + "/out_gmem_out.bin", std::ios::binary).write((const char *)out.bytes.data(), out.bytes.size());
    std::ofstream(dir + "/result.txt") << "cycles " << finished - started << " total_cycles " << cycle
                                       << " seconds " << seconds << " cpu_seconds " << cpu_seconds << "\n";
    top->final();
    return 0;
}
