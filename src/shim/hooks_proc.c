/* hooks_proc.c - interposed process-identity calls: the setuid family and the exec family.
 *
 * Neither moves bytes; both change what happens to this process's segment. A daemon that starts as
 * root and drops to an unprivileged user (nginx workers: `user nobody`) could not create its
 * segment afterwards in root's LDTRACE_DIR, so the segment is created right before euid 0 goes
 * away (a mapping stays writable whatever the credentials later become). An exec ends this process
 * image: its segment is marked exited right before the real call, so the sidecar can finish it at
 * once instead of waiting for the pid to go (which, across exec, it never does); when the exec
 * fails and returns, the mark is taken back and the image carries on tracing.
 *
 * Limits: a sidecar that saw the mark during a failed exec may already have finished the segment;
 * records pushed after that are lost (a failed exec is rare, and execvp's PATH search happens
 * inside libc, below our hook, so it counts as one call). Processes forked after the drop create
 * their own segment lazily and may find the directory closed to them (nothing is recorded then).
 */
#include <errno.h>
#include <unistd.h>

#include "shim/shim.h"

#define LDT_HOOK __attribute__((visibility("default")))

/* The effective uid is about to become neu ((uid_t)-1: unchanged). Preserves errno. */
static void before_euid(uid_t neu)
{
    if (ldt__mode != LDT__MODE_ON || ldt__depth || neu == (uid_t)-1 || neu == 0)
        return;
    int saved = errno;
    if (geteuid() == 0) {
        ldt__depth++;
        ldt__seg_prepare();
        ldt__depth--;
    }
    errno = saved;
}

LDT_HOOK int setuid(uid_t uid)
{
    before_euid(uid);
    return ldt_real.setuid(uid);
}

LDT_HOOK int seteuid(uid_t euid)
{
    before_euid(euid);
    return ldt_real.seteuid(euid);
}

LDT_HOOK int setreuid(uid_t ruid, uid_t euid)
{
    before_euid(euid);
    return ldt_real.setreuid(ruid, euid);
}

LDT_HOOK int setresuid(uid_t ruid, uid_t euid, uid_t suid)
{
    before_euid(euid);
    return ldt_real.setresuid(ruid, euid, suid);
}

/* Around an exec: mark before, unmark when it came back (failed). Preserves errno. */
static void exec_mark(int on)
{
    if (ldt__mode != LDT__MODE_ON)
        return;
    int saved = errno;
    ldt__seg_exec_mark(on);
    errno = saved;
}

/* A path that cannot be executed fails before anything happens: no need to mark for it. */
static int may_exec(const char *path)
{
    int saved = errno;
    int ok = path && access(path, X_OK) == 0;
    errno = saved;
    return ok;
}

LDT_HOOK int execve(const char *path, char *const argv[], char *const envp[])
{
    int marked = may_exec(path);
    if (marked)
        exec_mark(1);
    int rc = ldt_real.execve(path, argv, envp);
    if (marked)
        exec_mark(0);
    return rc;
}

LDT_HOOK int execv(const char *path, char *const argv[])
{
    int marked = may_exec(path);
    if (marked)
        exec_mark(1);
    int rc = ldt_real.execv(path, argv);
    if (marked)
        exec_mark(0);
    return rc;
}

LDT_HOOK int execvp(const char *file, char *const argv[])
{
    exec_mark(1);
    int rc = ldt_real.execvp(file, argv);
    exec_mark(0);
    return rc;
}

LDT_HOOK int execvpe(const char *file, char *const argv[], char *const envp[])
{
    exec_mark(1);
    int rc = ldt_real.execvpe(file, argv, envp);
    exec_mark(0);
    return rc;
}

LDT_HOOK int fexecve(int fd, char *const argv[], char *const envp[])
{
    exec_mark(1);
    int rc = ldt_real.fexecve(fd, argv, envp);
    exec_mark(0);
    return rc;
}
