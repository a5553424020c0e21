/*
 * sha256sum.c - pinfold example task definition "sha256sum".
 *
 * Computes the SHA-256 digest of every regular file under an input directory
 * and writes them in the GNU coreutils `sha256sum` format,
 *
 *     <64 lower-case hex digits><space><space><path relative to the input dir>\n
 *
 * to an output file and, identically, to standard output. The result can be
 * verified with `cd <input dir> && sha256sum -c SHA256SUMS`.
 *
 * Usage:   sha256sum <input dir> <output file>
 * In pinfold the manifest passes: sha256sum /input /output/SHA256SUMS
 *
 * Behaviour, chosen so that the output is deterministic:
 *   - The tree is walked depth-first; the entries of every directory are
 *     sorted by name (byte-wise, strcmp) before being visited, so the order
 *     never depends on the order readdir returns them in.
 *   - Only regular files and directories are visited. Anything else (symbolic
 *     links, devices, ...) is skipped with a note on stderr; symlinks are not
 *     followed.
 *   - Like coreutils, a path containing a backslash, newline or carriage
 *     return is escaped ("\\", "\n", "\r") and its line starts with a "\".
 *   - A file that cannot be read is reported on stderr and left out; the walk
 *     goes on and the program exits with status 1 at the end. Any other error
 *     (bad arguments, unwritable output) also exits non-zero with a message.
 *   - No clock, randomness or environment is used.
 *
 * SHA-256 (FIPS 180-4) is implemented below and files are hashed in 64 KiB
 * chunks, so memory use does not depend on file sizes. On start-up the
 * implementation checks itself against the FIPS 180-4 test vector for "abc".
 *
 * The source uses only POSIX interfaces, so it also builds natively
 * (`cc -O2 sha256sum.c -o sha256sum`), which is handy for testing.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* SHA-256                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t state[8];  /* intermediate hash value H0..H7 */
    uint64_t length;    /* total message length in bytes */
    uint8_t block[64];  /* pending, not yet compressed input */
    size_t used;        /* bytes of `block` in use */
} sha256_ctx;

/* Round constants: first 32 bits of the fractional parts of the cube roots
 * of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_init(sha256_ctx *c) {
    /* Initial hash value: fractional parts of the square roots of the first
     * 8 primes. */
    static const uint32_t H0[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(c->state, H0, sizeof H0);
    c->length = 0;
    c->used = 0;
}

/* Compresses one 64-byte block into the state. */
static void sha256_block(uint32_t s[8], const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3];
    uint32_t e = s[4], f = s[5], g = s[6], h = s[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d;
    s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t n) {
    const uint8_t *p = data;
    c->length += n;
    if (c->used > 0) { /* top up a partially filled block first */
        size_t take = 64 - c->used;
        if (take > n) take = n;
        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used < 64) return;
        sha256_block(c->state, c->block);
        c->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) /* whole blocks straight from input */
        sha256_block(c->state, p);
    memcpy(c->block, p, n);
    c->used = n;
}

/* Pads the message (0x80, zeros, 64-bit big-endian bit length) and writes
 * the digest as 64 lower-case hex digits plus a NUL into `hex`. */
static void sha256_final_hex(sha256_ctx *c, char hex[65]) {
    uint64_t bits = c->length * 8;
    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        sha256_block(c->state, c->block);
        c->used = 0;
    }
    memset(c->block + c->used, 0, 56 - c->used);
    for (int i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(c->state, c->block);

    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) hex[8 * i + j] = digits[(c->state[i] >> (28 - 4 * j)) & 0xf];
    hex[64] = '\0';
}

/* FIPS 180-4 example: SHA-256("abc"), and a two-block message. */
static int sha256_self_test(void) {
    static const struct { const char *msg, *hex; } v[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        sha256_ctx c;
        char hex[65];
        sha256_init(&c);
        /* Feed one byte at a time to exercise the partial-block path too. */
        for (const char *p = v[i].msg; *p; p++) sha256_update(&c, p, 1);
        sha256_final_hex(&c, hex);
        if (strcmp(hex, v[i].hex) != 0) return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

static FILE *out_file;        /* the SHA256SUMS file */
static const char *out_path;  /* its name, for messages */
static int status = 0;        /* exit status; set to 1 on a per-file error */

/* Writes one line in coreutils format to `f`. */
static void put_line(FILE *f, const char *hex, const char *rel) {
    int escape = strpbrk(rel, "\\\n\r") != NULL;
    if (escape) fputc('\\', f);
    fputs(hex, f);
    fputs("  ", f);
    for (const char *p = rel; *p; p++) {
        switch (*p) {
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        default: fputc(*p, f);
        }
    }
    fputc('\n', f);
}

/* ------------------------------------------------------------------------ */
/* Walking the input tree                                                    */
/* ------------------------------------------------------------------------ */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("sha256sum: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

/* Returns "a/b" (just "b" when a is empty, no doubled "/" when a ends in
 * one), freshly allocated. */
static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = xmalloc(la + lb + 2);
    size_t n = 0;
    if (la) {
        memcpy(s, a, la);
        n = la;
        if (a[la - 1] != '/') s[n++] = '/';
    }
    memcpy(s + n, b, lb + 1);
    return s;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hashes the regular file `path`; prints its line under the name `rel`. */
static void hash_file(const char *path, const char *rel) {
    static uint8_t buf[64 * 1024];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "sha256sum: %s: %s\n", path, strerror(errno));
        status = 1;
        return;
    }
    sha256_ctx c;
    sha256_init(&c);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "sha256sum: %s: %s\n", path, strerror(errno));
            close(fd);
            status = 1;
            return;
        }
        sha256_update(&c, buf, (size_t)n);
    }
    close(fd);

    char hex[65];
    sha256_final_hex(&c, hex);
    put_line(out_file, hex, rel);
    put_line(stdout, hex, rel);
}

/* Visits directory `path` (shown as `rel` in the output, "" for the root):
 * lists it, closes it, sorts the names and then visits each entry, so at most
 * one directory is open at a time however deep the tree is. */
static void walk(const char *path, const char *rel) {
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "sha256sum: %s: %s\n", path, strerror(errno));
        status = 1;
        return;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                fputs("sha256sum: out of memory\n", stderr);
                exit(1);
            }
            names = grown;
        }
        names[count++] = join("", e->d_name);
        errno = 0;
    }
    if (errno != 0) {
        fprintf(stderr, "sha256sum: %s: %s\n", path, strerror(errno));
        status = 1;
    }
    closedir(d);

    qsort(names, count, sizeof *names, by_name);

    for (size_t i = 0; i < count; i++) {
        char *child = join(path, names[i]);
        char *child_rel = join(rel, names[i]);
        struct stat st;
        if (lstat(child, &st) != 0) {
            fprintf(stderr, "sha256sum: %s: %s\n", child, strerror(errno));
            status = 1;
        } else if (S_ISDIR(st.st_mode)) {
            walk(child, child_rel);
        } else if (S_ISREG(st.st_mode)) {
            hash_file(child, child_rel);
        } else {
            fprintf(stderr, "sha256sum: %s: not a regular file or directory, skipped\n", child);
        }
        free(child);
        free(child_rel);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <input dir> <output file>\n", argc > 0 ? argv[0] : "sha256sum");
        return 2;
    }
    if (!sha256_self_test()) {
        fputs("sha256sum: internal error: SHA-256 self-test failed\n", stderr);
        return 1;
    }
    const char *in_dir = argv[1];
    out_path = argv[2];

    /* Strip trailing slashes from the input dir so joined paths look tidy. */
    size_t len = strlen(in_dir);
    char *root = xmalloc(len + 1);
    memcpy(root, in_dir, len + 1);
    while (len > 1 && root[len - 1] == '/') root[--len] = '\0';

    struct stat st;
    if (stat(root, &st) != 0) {
        fprintf(stderr, "sha256sum: %s: %s\n", root, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "sha256sum: %s: not a directory\n", root);
        return 1;
    }

    out_file = fopen(out_path, "w");
    if (!out_file) {
        fprintf(stderr, "sha256sum: cannot create %s: %s\n", out_path, strerror(errno));
        return 1;
    }

    walk(root, "");
    free(root);

    int write_error = ferror(out_file);
    if (fclose(out_file) != 0) write_error = 1;
    if (write_error) {
        fprintf(stderr, "sha256sum: error writing %s\n", out_path);
        return 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fputs("sha256sum: error writing standard output\n", stderr);
        return 1;
    }
    return status;
}
