/* Preloaded after gcc's libasan by test/sanitize.sh. PostgreSQL is not instrumented, so the
 * AddressSanitizer runtime initializes lazily, at the first call it intercepts. On Debian 12
 * that first call is a malloc made inside glibc's newlocale() or bindtextdomain() by the
 * constructor of a library postgres links (libgpg-error, p11-kit), while glibc holds its
 * locale lock; initializing there leaves the lock broken and the process hangs. These
 * wrappers initialize the runtime before glibc takes the lock, then call glibc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libintl.h>
#include <locale.h>

extern void __asan_init(void);

/* glibc's function called name, looked up past this library. */
static void *next_symbol(const char *name) {
    return dlsym(RTLD_NEXT, name);
}

/* newlocale(), once the sanitizer runtime is initialized. */
locale_t newlocale(int category_mask, const char *locale, locale_t base) {
    static locale_t (*real)(int, const char *, locale_t);
    __asan_init();
    if (real == 0)
        real = (locale_t(*)(int, const char *, locale_t))next_symbol("newlocale");
    return real(category_mask, locale, base);
}

/* bindtextdomain(), once the sanitizer runtime is initialized. */
char *bindtextdomain(const char *domain, const char *directory) {
    static char *(*real)(const char *, const char *);
    __asan_init();
    if (real == 0)
        real = (char *(*)(const char *, const char *))next_symbol("bindtextdomain");
    return real(domain, directory);
}
