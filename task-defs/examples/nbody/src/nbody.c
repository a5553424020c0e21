/*
 * nbody.c - pinfold example task definition "nbody": a CPU benchmark.
 *
 * Simulates the orbits of the Jovian planets (Sun, Jupiter, Saturn, Uranus,
 * Neptune) with the simple symplectic-Euler integrator of the Computer
 * Language Benchmarks Game "n-body" problem: 5 bodies, double precision,
 * time step dt = 0.01, units where the Sun's mass is 4*pi^2 and a year is 1
 * (365.24 days). The code here is a fresh implementation of that published
 * algorithm; the orbital data is the problem's standard initial state.
 *
 * It prints the total energy of the system before and after the simulation,
 * each as "%.9f\n", to standard output and writes the same two lines to an
 * output file. For 1000 steps the result is
 *
 *     -0.169075164
 *     -0.169087605
 *
 * for the default 1000000 steps
 *
 *     -0.169075164
 *     -0.169086185
 *
 * and for 50000000 steps (the size the Benchmarks Game itself times)
 *
 *     -0.169075164
 *     -0.169059907
 *
 * Usage:   nbody [steps [output file]]
 *   steps        number of time steps, 1..1000000000 (default 1000000)
 *   output file  where to write the two energy lines (default
 *                /output/energy.txt); "-" writes no file. If the file's
 *                directory does not exist (for example a native run on a
 *                machine without /output), the file is skipped with a note on
 *                stderr and the program still succeeds. Any other failure to
 *                write it is an error (exit status 1); this includes running
 *                under WASI without a preopened /output, where the error is
 *                ENOTCAPABLE (pinfold always preopens /output).
 * In pinfold the manifest passes: nbody {steps}
 *
 * The same source builds unchanged for WebAssembly and natively, so the two
 * can be compared:
 *     clang --target=wasm32-wasi -O2 -DNDEBUG -s nbody.c -o nbody.wasm
 *     cc -O2 nbody.c -lm -o nbody
 * Both use IEEE-754 double arithmetic and print the same values. (A native
 * build with -ffast-math, or one that fuses multiply-adds, e.g. -march=native
 * on a CPU with FMA, may round intermediate results differently; at 9 decimals
 * this has not been seen to matter, but avoid such flags for exact comparison.)
 *
 * No clock, randomness or environment is used; output depends only on steps.
 */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.141592653589793
#define SOLAR_MASS (4 * PI * PI)
#define DAYS_PER_YEAR 365.24
#define NBODIES 5
#define DT 0.01

#define STEPS_DEFAULT 1000000L
#define STEPS_MAX 1000000000L

typedef struct {
    double x, y, z;    /* position (AU) */
    double vx, vy, vz; /* velocity (AU per year) */
    double mass;       /* in units where G = 1 */
} body;

/* Standard initial state of the benchmark; velocities are given in AU/day
 * and converted to AU/year, masses relative to the Sun. */
static body bodies[NBODIES] = {
    /* Sun */
    {0, 0, 0, 0, 0, 0, SOLAR_MASS},
    /* Jupiter */
    {4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
     1.66007664274403694e-03 * DAYS_PER_YEAR, 7.69901118419740425e-03 * DAYS_PER_YEAR,
     -6.90460016972063023e-05 * DAYS_PER_YEAR, 9.54791938424326609e-04 * SOLAR_MASS},
    /* Saturn */
    {8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
     -2.76742510726862411e-03 * DAYS_PER_YEAR, 4.99852801234917238e-03 * DAYS_PER_YEAR,
     2.30417297573763929e-05 * DAYS_PER_YEAR, 2.85885980666130812e-04 * SOLAR_MASS},
    /* Uranus */
    {1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
     2.96460137564761618e-03 * DAYS_PER_YEAR, 2.37847173959480950e-03 * DAYS_PER_YEAR,
     -2.96589568540237556e-05 * DAYS_PER_YEAR, 4.36624404335156298e-05 * SOLAR_MASS},
    /* Neptune */
    {1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
     2.68067772490389322e-03 * DAYS_PER_YEAR, 1.62824170038242295e-03 * DAYS_PER_YEAR,
     -9.51592254519715870e-05 * DAYS_PER_YEAR, 5.15138902046611451e-05 * SOLAR_MASS},
};

/* Gives the Sun the velocity that makes the total momentum zero, so the
 * system's centre of mass stays put. */
static void offset_momentum(body *b) {
    double px = 0, py = 0, pz = 0;
    for (int i = 0; i < NBODIES; i++) {
        px += b[i].vx * b[i].mass;
        py += b[i].vy * b[i].mass;
        pz += b[i].vz * b[i].mass;
    }
    b[0].vx = -px / SOLAR_MASS;
    b[0].vy = -py / SOLAR_MASS;
    b[0].vz = -pz / SOLAR_MASS;
}

/* Total energy: kinetic energy of every body minus the gravitational
 * potential energy of every pair. */
static double energy(const body *b) {
    double e = 0;
    for (int i = 0; i < NBODIES; i++) {
        e += 0.5 * b[i].mass * (b[i].vx * b[i].vx + b[i].vy * b[i].vy + b[i].vz * b[i].vz);
        for (int j = i + 1; j < NBODIES; j++) {
            double dx = b[i].x - b[j].x, dy = b[i].y - b[j].y, dz = b[i].z - b[j].z;
            e -= b[i].mass * b[j].mass / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

/* One time step: update every velocity from the pairwise gravitational
 * pulls, then move every body along its new velocity. */
static void advance(body *b, double dt) {
    for (int i = 0; i < NBODIES; i++) {
        for (int j = i + 1; j < NBODIES; j++) {
            double dx = b[i].x - b[j].x, dy = b[i].y - b[j].y, dz = b[i].z - b[j].z;
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = dt / (d2 * sqrt(d2));
            b[i].vx -= dx * b[j].mass * mag;
            b[i].vy -= dy * b[j].mass * mag;
            b[i].vz -= dz * b[j].mass * mag;
            b[j].vx += dx * b[i].mass * mag;
            b[j].vy += dy * b[i].mass * mag;
            b[j].vz += dz * b[i].mass * mag;
        }
    }
    for (int i = 0; i < NBODIES; i++) {
        b[i].x += dt * b[i].vx;
        b[i].y += dt * b[i].vy;
        b[i].z += dt * b[i].vz;
    }
}

/* Parses a decimal step count in [1, STEPS_MAX]; returns -1 if invalid. */
static long parse_steps(const char *s) {
    long v = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > STEPS_MAX) return -1;
    }
    return v >= 1 ? v : -1;
}

int main(int argc, char **argv) {
    if (argc > 3) {
        fputs("usage: nbody [steps [output file]]\n", stderr);
        return 2;
    }
    long steps = STEPS_DEFAULT;
    if (argc > 1) {
        steps = parse_steps(argv[1]);
        if (steps < 0) {
            fprintf(stderr, "nbody: steps must be an integer from 1 to %ld, got %s\n", STEPS_MAX, argv[1]);
            return 2;
        }
    }
    const char *out_path = argc > 2 ? argv[2] : "/output/energy.txt";

    char lines[2][64];
    offset_momentum(bodies);
    snprintf(lines[0], sizeof lines[0], "%.9f\n", energy(bodies));
    for (long i = 0; i < steps; i++) advance(bodies, DT);
    snprintf(lines[1], sizeof lines[1], "%.9f\n", energy(bodies));

    fputs(lines[0], stdout);
    fputs(lines[1], stdout);
    if (fflush(stdout) != 0) {
        fputs("nbody: error writing standard output\n", stderr);
        return 1;
    }

    if (strcmp(out_path, "-") == 0) return 0;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        if (errno == ENOENT) {
            fprintf(stderr, "nbody: %s: directory does not exist, not writing it\n", out_path);
            return 0;
        }
        fprintf(stderr, "nbody: cannot create %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    fputs(lines[0], f);
    fputs(lines[1], f);
    int write_error = ferror(f);
    if (fclose(f) != 0) write_error = 1;
    if (write_error) {
        fprintf(stderr, "nbody: error writing %s\n", out_path);
        return 1;
    }
    return 0;
}
