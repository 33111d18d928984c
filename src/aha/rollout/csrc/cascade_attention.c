/* Decode-step attention of the rollout engine ("cascade" layout), float32, for CPUs.
 *
 * One new query per row attends over its prompt's keys (shared by all rows of that prompt: stored
 * once per distinct prompt) followed by the row's own generated keys. PyTorch does this as several
 * small batched matmuls plus layout copies; on a CPU those are latency-bound (each (row, head) is a
 * 2 x 64 by 64 x T product). Here each (row, KV head) is one task of an OpenMP loop that reads its
 * keys and values once, in long contiguous runs, with no layout copies. The softmax between the two
 * passes stays in PyTorch (aha/rollout/cpu_kernels.py), so only dot products are computed here.
 *
 * Layouts (all float32, contiguous unless a stride is given; sizes int64):
 *   q       (B, Hk, G, D) queries, already scaled; row b starts at q + b * q_row_stride
 *   pkt     (U, Hk, D, P) prompt keys, transposed (one key per column)
 *   pv      (U, Hk, P, D) prompt values
 *   bias    (U, P) additive prompt mask (0 or -inf for left padding), or NULL
 *   row_u   (B,) index of each row's prompt in 0..U-1
 *   kt      (B, Hk, D, cap) generated keys, transposed; the first T columns are filled, or the
 *           first T - 1 when new_k is given: then new_k (B, Hk, D) (row b at new_k + b * stride)
 *           is written to column T - 1 first
 *   v       (B, Hk, cap, D) generated values; the first T rows are filled
 *   scores  (B, Hk, G, P + T), weights (B, Hk, G, P + T), out (B, Hk, G, D)
 * Query head h * G + g reads KV head h (grouped-query attention).
 *
 * Built by aha/rollout/cpu_kernels.py with the machine's C compiler (-O3 -march=native -fopenmp).
 * Loaded after torch, libgomp normally resolves to the copy PyTorch's CPU wheels load (same soname),
 * so the thread count is torch's; with another OpenMP runtime (a renamed libgomp, Intel's) the
 * kernel runs on its own runtime's default threads.
 */
#include <stdint.h>
#include <math.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));

static inline v16 load16(const float* p) { v16 x; memcpy(&x, p, sizeof x); return x; }
static inline void store16(float* p, v16 x) { memcpy(p, &x, sizeof x); }

/* dst[j] = sum_d q[d] * kt[d * ldk + j] for j < n: vectorised across keys, so no horizontal sums. */
static void dot_columns(const float* q, const float* kt, int64_t ldk, int64_t n, int64_t D, float* dst) {
    int64_t j0 = 0;
    for (; j0 + 64 <= n; j0 += 64) {
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t d = 0; d < D; d++) {
            const float* row = kt + d * ldk + j0;
            const float qd = q[d];
            a0 += qd * load16(row);
            a1 += qd * load16(row + 16);
            a2 += qd * load16(row + 32);
            a3 += qd * load16(row + 48);
        }
        store16(dst + j0, a0);
        store16(dst + j0 + 16, a1);
        store16(dst + j0 + 32, a2);
        store16(dst + j0 + 48, a3);
    }
    for (; j0 + 16 <= n; j0 += 16) {
        v16 a0 = {0};
        for (int64_t d = 0; d < D; d++) a0 += q[d] * load16(kt + d * ldk + j0);
        store16(dst + j0, a0);
    }
    for (; j0 < n; j0++) {
        float a = 0.0f;
        for (int64_t d = 0; d < D; d++) a += q[d] * kt[d * ldk + j0];
        dst[j0] = a;
    }
}

/* acc[0:D] += sum_{j < n} w[j] * v[j * D : (j + 1) * D] */
static void weighted_rows(const float* w, const float* v, int64_t n, int64_t D, float* acc) {
    int64_t d0 = 0;
    for (; d0 + 64 <= D; d0 += 64) {
        v16 a0 = load16(acc + d0), a1 = load16(acc + d0 + 16), a2 = load16(acc + d0 + 32),
            a3 = load16(acc + d0 + 48);
        for (int64_t j = 0; j < n; j++) {
            const float* row = v + j * D + d0;
            const float wj = w[j];
            a0 += wj * load16(row);
            a1 += wj * load16(row + 16);
            a2 += wj * load16(row + 32);
            a3 += wj * load16(row + 48);
        }
        store16(acc + d0, a0);
        store16(acc + d0 + 16, a1);
        store16(acc + d0 + 32, a2);
        store16(acc + d0 + 48, a3);
    }
    for (; d0 + 16 <= D; d0 += 16) {
        v16 a0 = load16(acc + d0);
        for (int64_t j = 0; j < n; j++) a0 += w[j] * load16(v + j * D + d0);
        store16(acc + d0, a0);
    }
    for (; d0 < D; d0++) {
        float a = acc[d0];
        for (int64_t j = 0; j < n; j++) a += w[j] * v[j * D + d0];
        acc[d0] = a;
    }
}

/* Returns 0, or 1 (computing nothing) when a row_u entry is outside 0..U-1. */
int aha_cascade_scores(const float* q, int64_t q_row_stride, const float* pkt, const float* bias,
                       const int64_t* row_u, float* kt, const float* new_k, int64_t new_k_row_stride,
                       float* scores, int64_t B, int64_t Hk, int64_t G, int64_t D, int64_t U, int64_t P,
                       int64_t T, int64_t cap) {
    const int64_t L = P + T;
    for (int64_t b = 0; b < B; b++)
        if (row_u[b] < 0 || row_u[b] >= U) return 1;
    #pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < B * Hk; bh++) {
        const int64_t b = bh / Hk, h = bh % Hk, u = row_u[b];
        const float* pk = pkt + (u * Hk + h) * D * P;
        float* k = kt + bh * D * cap;
        if (new_k) {  /* store this step's key (column T - 1) here: the lines are read right after */
            const float* nk = new_k + b * new_k_row_stride + h * D;
            for (int64_t d = 0; d < D; d++) k[d * cap + T - 1] = nk[d];
        }
        for (int64_t g = 0; g < G; g++) {
            const float* qg = q + b * q_row_stride + (h * G + g) * D;
            float* s = scores + (bh * G + g) * L;
            dot_columns(qg, pk, P, P, D, s);
            if (bias) {
                const float* bu = bias + u * P;
                for (int64_t j = 0; j < P; j++) s[j] += bu[j];
            }
            dot_columns(qg, k, cap, T, D, s + P);
        }
    }
    return 0;
}

void aha_cascade_values(const float* weights, const float* pv, const int64_t* row_u, const float* v,
                        float* out, int64_t B, int64_t Hk, int64_t G, int64_t D, int64_t P, int64_t T,
                        int64_t cap) {
    const int64_t L = P + T;
    #pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < B * Hk; bh++) {
        const int64_t b = bh / Hk, h = bh % Hk, u = row_u[b];
        const float* pvh = pv + (u * Hk + h) * P * D;
        const float* vh = v + bh * cap * D;
        for (int64_t g = 0; g < G; g++) {
            const float* w = weights + (bh * G + g) * L;
            float* o = out + (bh * G + g) * D;
            memset(o, 0, (size_t)D * sizeof(float));
            weighted_rows(w, pvh, P, D, o);
            weighted_rows(w + P, vh, T, D, o);
        }
    }
}

/* RMSNorm of `rows` rows of H floats (row r at x + r * x_row_stride) into out (rows, H) contiguous:
 * out = weight * (x / sqrt(mean(x^2) + eps)). The decode step's six PyTorch ops in one pass. */
void aha_rms_norm(const float* x, int64_t x_row_stride, const float* weight, double eps, float* out,
                  int64_t rows, int64_t H) {
    #pragma omp parallel for schedule(static) if (rows * H >= 262144)
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * x_row_stride;
        float* o = out + r * H;
        float ss = 0.0f;
        #pragma omp simd reduction(+:ss)
        for (int64_t i = 0; i < H; i++) ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss / (float)H + (float)eps);
        #pragma omp simd
        for (int64_t i = 0; i < H; i++) o[i] = weight[i] * (xr[i] * inv);
    }
}
