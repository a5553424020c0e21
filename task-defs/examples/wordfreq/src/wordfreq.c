/*
 * wordfreq.c - pinfold example task definition "wordfreq".
 *
 * Counts how often each word occurs in the text files under an input
 * directory and writes the most frequent ones to a TSV file:
 *
 *     <count>\t<word>\n
 *
 * sorted by count (descending), then by word (ascending, byte-wise). It also
 * prints a one-line summary to standard output:
 *
 *     files=<regular files read> words=<words counted> distinct=<distinct words>
 *
 * Usage:   wordfreq [--top N] [--case fold|keep] <input dir> <output file>
 *          (defaults: --top 20 --case fold; N must be in 1..10000)
 * In pinfold the manifest passes:
 *          wordfreq --top {top} --case {case} /input /output/freq.tsv
 *
 * What a word is:
 *   - a maximal run of ASCII letters, ASCII digits and apostrophes ('),
 *     with leading and trailing apostrophes removed ("'tis" -> "tis",
 *     "don't" stays "don't"); a run of apostrophes alone is not a word;
 *   - every other byte separates words (this includes every byte of a
 *     non-ASCII UTF-8 character: the program treats input as bytes);
 *   - with --case fold, A-Z are lowered to a-z; with --case keep, "The" and
 *     "the" are different words.
 *
 * Behaviour, chosen so that the output is deterministic:
 *   - Every regular file under the input directory is read, recursively;
 *     the entries of each directory are sorted by name (strcmp) before being
 *     visited. (Counts do not depend on the order, but "files=" and the error
 *     reported first would.) Symbolic links and other special files are
 *     skipped with a note on stderr.
 *   - Ties in count are broken by the word, so the ranking is a total order.
 *   - A file that cannot be read stops the program with a message on stderr
 *     and exit status 1, and no output file is written: partial counts would
 *     be misleading. Bad arguments exit with status 2.
 *   - No clock, randomness or environment is used.
 *
 * Words are counted in an open-addressing hash table (FNV-1a hash, linear
 * probing, doubled when 3/4 full). Files are read in 64 KiB chunks; a word
 * that straddles two chunks is carried over in a growable buffer.
 *
 * The source uses only POSIX interfaces, so it also builds natively
 * (`cc -O2 wordfreq.c -o wordfreq`), which is handy for testing.
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

#define TOP_MIN 1
#define TOP_MAX 10000

static void die(const char *msg, const char *detail) {
    if (detail)
        fprintf(stderr, "wordfreq: %s: %s\n", msg, detail);
    else
        fprintf(stderr, "wordfreq: %s\n", msg);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory", NULL);
    return p;
}

static void *xrealloc(void *old, size_t n) {
    void *p = realloc(old, n ? n : 1);
    if (!p) die("out of memory", NULL);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Hash table: word -> count                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *word;     /* NUL-terminated copy; NULL marks an empty slot */
    size_t len;     /* strlen(word) */
    uint32_t hash;  /* cached hash of word */
    uint64_t count; /* occurrences */
} entry;

static entry *table;       /* `cap` slots, cap a power of two */
static size_t cap;
static size_t distinct;    /* occupied slots */
static uint64_t total;     /* words counted */

/* 32-bit FNV-1a. */
static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Doubles the table and re-inserts every entry. */
static void grow(void) {
    size_t new_cap = cap ? cap * 2 : 1024;
    entry *t = xmalloc(new_cap * sizeof *t);
    memset(t, 0, new_cap * sizeof *t);
    for (size_t i = 0; i < cap; i++) {
        if (!table[i].word) continue;
        size_t j = table[i].hash & (new_cap - 1);
        while (t[j].word) j = (j + 1) & (new_cap - 1);
        t[j] = table[i];
    }
    free(table);
    table = t;
    cap = new_cap;
}

/* Adds one occurrence of the word s[0..n). */
static void count_word(const char *s, size_t n) {
    if (4 * (distinct + 1) > 3 * cap) grow();
    uint32_t h = fnv1a(s, n);
    size_t i = h & (cap - 1);
    while (table[i].word) {
        if (table[i].hash == h && table[i].len == n && memcmp(table[i].word, s, n) == 0) {
            table[i].count++;
            total++;
            return;
        }
        i = (i + 1) & (cap - 1);
    }
    table[i].word = xmalloc(n + 1);
    memcpy(table[i].word, s, n);
    table[i].word[n] = '\0';
    table[i].len = n;
    table[i].hash = h;
    table[i].count = 1;
    distinct++;
    total++;
}

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                 */
/* ------------------------------------------------------------------------ */

static int fold_case = 1; /* --case fold (1) or keep (0) */

static char *word;        /* the word being assembled; may span chunks */
static size_t word_len, word_cap;

static int is_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '\'';
}

/* Ends the current run of word bytes: trims apostrophes, counts the rest. */
static void end_word(void) {
    size_t start = 0, end = word_len;
    while (start < end && word[start] == '\'') start++;
    while (end > start && word[end - 1] == '\'') end--;
    if (end > start) count_word(word + start, end - start);
    word_len = 0;
}

static void feed(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (!is_word_byte(c)) {
            if (word_len) end_word();
            continue;
        }
        if (fold_case && c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
        if (word_len == word_cap) {
            word_cap = word_cap ? word_cap * 2 : 64;
            word = xrealloc(word, word_cap);
        }
        word[word_len++] = (char)c;
    }
}

/* ------------------------------------------------------------------------ */
/* Walking the input tree                                                    */
/* ------------------------------------------------------------------------ */

static unsigned long files;

/* Returns "a/b" (no doubled "/" when a ends in one), freshly allocated. */
static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = xmalloc(la + lb + 2);
    size_t n = la;
    memcpy(s, a, la);
    if (la && a[la - 1] != '/') s[n++] = '/';
    memcpy(s + n, b, lb + 1);
    return s;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void read_file(const char *path) {
    static unsigned char buf[64 * 1024];
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path, strerror(errno));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            die(path, strerror(errno));
        }
        feed(buf, (size_t)n);
    }
    close(fd);
    if (word_len) end_word(); /* a word never continues into the next file */
    files++;
}

/* Lists directory `path`, closes it, then visits the sorted entries, so at
 * most one directory is open at a time. */
static void walk(const char *path) {
    DIR *d = opendir(path);
    if (!d) die(path, strerror(errno));
    char **names = NULL;
    size_t count = 0, names_cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (count == names_cap) {
            names_cap = names_cap ? names_cap * 2 : 16;
            names = xrealloc(names, names_cap * sizeof *names);
        }
        names[count++] = join("", e->d_name);
        errno = 0;
    }
    if (errno != 0) die(path, strerror(errno));
    closedir(d);

    qsort(names, count, sizeof *names, by_name);

    for (size_t i = 0; i < count; i++) {
        char *child = join(path, names[i]);
        struct stat st;
        if (lstat(child, &st) != 0) die(child, strerror(errno));
        if (S_ISDIR(st.st_mode))
            walk(child);
        else if (S_ISREG(st.st_mode))
            read_file(child);
        else
            fprintf(stderr, "wordfreq: %s: not a regular file or directory, skipped\n", child);
        free(child);
        free(names[i]);
    }
    free(names);
}

/* ------------------------------------------------------------------------ */
/* Ranking and output                                                        */
/* ------------------------------------------------------------------------ */

/* Count descending, then word ascending (byte-wise; a prefix sorts first). */
static int by_rank(const void *pa, const void *pb) {
    const entry *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->word, b->word, n);
    if (c) return c;
    return (a->len > b->len) - (a->len < b->len);
}

static void usage(void) {
    fputs("usage: wordfreq [--top N] [--case fold|keep] <input dir> <output file>\n", stderr);
    exit(2);
}

/* Parses a decimal integer in [TOP_MIN, TOP_MAX]; exits on anything else. */
static long parse_top(const char *s) {
    long v = 0;
    if (!*s) usage();
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            fprintf(stderr, "wordfreq: --top: not a number: %s\n", s);
            exit(2);
        }
        v = v * 10 + (*p - '0');
        if (v > TOP_MAX) break;
    }
    if (v < TOP_MIN || v > TOP_MAX) {
        fprintf(stderr, "wordfreq: --top must be between %d and %d, got %s\n", TOP_MIN, TOP_MAX, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    long top = 20;
    int i = 1;
    while (i < argc && strncmp(argv[i], "--", 2) == 0) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--top") == 0) {
            top = parse_top(argv[i + 1]);
        } else if (strcmp(argv[i], "--case") == 0) {
            if (strcmp(argv[i + 1], "fold") == 0)
                fold_case = 1;
            else if (strcmp(argv[i + 1], "keep") == 0)
                fold_case = 0;
            else {
                fprintf(stderr, "wordfreq: --case must be fold or keep, got %s\n", argv[i + 1]);
                exit(2);
            }
        } else {
            fprintf(stderr, "wordfreq: unknown option %s\n", argv[i]);
            usage();
        }
        i += 2;
    }
    if (argc - i != 2) usage();
    const char *in_dir = argv[i], *out_path = argv[i + 1];

    struct stat st;
    if (stat(in_dir, &st) != 0) die(in_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) die(in_dir, "not a directory");

    grow(); /* allocate the initial table */
    walk(in_dir);

    /* Pack the occupied slots to the front, sort them, keep the top N. */
    size_t n = 0;
    for (size_t j = 0; j < cap; j++)
        if (table[j].word) table[n++] = table[j];
    qsort(table, n, sizeof *table, by_rank);
    if ((size_t)top < n) n = (size_t)top;

    FILE *out = fopen(out_path, "w");
    if (!out) die(out_path, strerror(errno));
    for (size_t j = 0; j < n; j++)
        fprintf(out, "%llu\t%s\n", (unsigned long long)table[j].count, table[j].word);
    int write_error = ferror(out);
    if (fclose(out) != 0) write_error = 1;
    if (write_error) die(out_path, "write error");

    printf("files=%lu words=%llu distinct=%zu\n", files, (unsigned long long)total, distinct);
    if (fflush(stdout) != 0) die("standard output", "write error");
    return 0;
}
