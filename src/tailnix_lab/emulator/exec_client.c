/*
 * tailnix-lab-exec: how a lab host runs its emulated commands (tailscale, systemctl, ...).
 *
 * The real `tailscale` is a small Go client of a resident daemon and answers in a few milliseconds;
 * a fresh Python interpreter per call takes ten times that. Every emulated command in a host's
 * /usr/local/sbin is a link to this program, which hands its argv, environment, working directory,
 * umask and standard streams (the file descriptors themselves) to the host's resident emulator
 * server (tailnix_lab.emulator.server). The server forks a child that runs the command's emulator
 * with everything already imported; this program forwards the signals it receives to that child and
 * ends the way the child ended: the same exit code, or killed by the same signal.
 *
 * When the server does not answer (not started yet, or gone), it runs the emulator in a new Python
 * interpreter instead: slower, same behaviour.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SERVER_SOCKET
#define SERVER_SOCKET "/run/tailnix-lab-emulator.sock"
#endif
#ifndef PYLIB
#define PYLIB "/run/tailnix-lab/pylib"
#endif
#define PROTOCOL "tailnix-lab-exec 1"

static int server = -1;

static void forward(int sig) {
    char line[16];
    int length = snprintf(line, sizeof line, "%d\n", sig);
    int saved = errno;
    (void)!send(server, line, (size_t)length, MSG_NOSIGNAL);
    errno = saved;
}

static void module_name(const char *command, char *out, size_t size) {
    const char *base = strrchr(command, '/');
    base = base ? base + 1 : command;
    snprintf(out, size, "%s", base);
    for (char *c = out; *c; c++) {
        if (*c == '-') *c = '_';
    }
}

static void run_in_new_interpreter(const char *module, int argc, char **argv) {
    char qualified[256];
    snprintf(qualified, sizeof qualified, "tailnix_lab.emulator.%s", module);
    char **args = calloc((size_t)argc + 5, sizeof *args);
    if (!args) _exit(70);
    args[0] = "python3";
    args[1] = "-S";
    args[2] = "-m";
    args[3] = qualified;
    for (int i = 1; i < argc; i++) args[i + 3] = argv[i];
    execv("/usr/bin/python3", args);
    fprintf(stderr, "tailnix-lab-exec: cannot run /usr/bin/python3: %s\n", strerror(errno));
    _exit(127);
}

/* The request: fields separated by NUL bytes, after a 4-byte big-endian length. */
struct buffer {
    char *data;
    size_t length, capacity;
};

static void append(struct buffer *b, const char *text) {
    size_t n = strlen(text) + 1;
    if (b->length + n > b->capacity) {
        b->capacity = (b->length + n) * 2;
        b->data = realloc(b->data, b->capacity);
        if (!b->data) _exit(70);
    }
    memcpy(b->data + b->length, text, n);
    b->length += n;
}

static void append_number(struct buffer *b, long value) {
    char text[32];
    snprintf(text, sizeof text, "%ld", value);
    append(b, text);
}

extern char **environ;

int main(int argc, char **argv) {
    char module[128];
    module_name(argv[0], module, sizeof module);
    /* The emulators start helpers of their own (unit supervisors) with the environment they got. */
    setenv("PYTHONPATH", PYLIB, 1);

    server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", SERVER_SOCKET);
    if (server < 0 || connect(server, (struct sockaddr *)&address, sizeof address) != 0) {
        run_in_new_interpreter(module, argc, argv);
    }

    /* Which of the standard streams are open: a closed one stays closed in the child. */
    int fds[3], passed = 0;
    char open_streams[4] = "---";
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) != -1) {
            fds[passed++] = fd;
            open_streams[fd] = (char)('0' + fd);
        }
    }
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, "/");
    mode_t mask = umask(0);
    umask(mask);

    struct buffer request = {0};
    append(&request, PROTOCOL);
    append(&request, module);
    append(&request, cwd);
    append_number(&request, (long)mask);
    append_number(&request, (long)getppid());
    append(&request, open_streams);
    append_number(&request, (long)argc - 1);
    for (int i = 1; i < argc; i++) append(&request, argv[i]);
    for (char **e = environ; *e; e++) append(&request, *e);

    uint32_t length = htonl((uint32_t)request.length);
    struct iovec parts[2] = {{&length, sizeof length}, {request.data, request.length}};
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = 2};
    if (passed) {
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)passed);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)passed);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * (size_t)passed);
    }
    ssize_t sent = sendmsg(server, &message, MSG_NOSIGNAL);
    if (sent < 0) run_in_new_interpreter(module, argc, argv);
    /* A stream socket may take the rest in further writes; the descriptors went with the first. */
    size_t total = sizeof length + request.length;
    while ((size_t)sent < total) {
        size_t offset = (size_t)sent;
        const char *from = offset < sizeof length ? (const char *)&length + offset
                                                  : request.data + (offset - sizeof length);
        size_t left = offset < sizeof length ? sizeof length - offset : total - offset;
        ssize_t more = send(server, from, left, MSG_NOSIGNAL);
        if (more < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "tailnix-lab-exec: the host's emulator server hung up: %s\n", strerror(errno));
            return 70;
        }
        sent += more;
    }
    free(request.data);

    /* From here on the child runs: what this process receives is meant for it. */
    static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGCONT};
    struct sigaction action = {.sa_handler = forward, .sa_flags = SA_RESTART};
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaction(forwarded[i], &action, NULL);

    char reply[64];
    size_t got = 0;
    while (got < sizeof reply - 1) {
        ssize_t n = recv(server, reply + got, sizeof reply - 1 - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (memchr(reply, '\n', got)) break;
    }
    reply[got] = '\0';
    int value;
    if (sscanf(reply, "exit %d", &value) == 1) return value;
    if (sscanf(reply, "signal %d", &value) == 1) {
        struct sigaction plain = {.sa_handler = SIG_DFL};
        sigemptyset(&plain.sa_mask);
        sigaction(value, &plain, NULL);
        sigset_t all;
        sigemptyset(&all);
        sigaddset(&all, value);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        kill(getpid(), value);
        return 128 + value;
    }
    fprintf(stderr, "tailnix-lab-exec: the host's emulator server ended %s without a status\n", module);
    return 70;
}
