/* udp-echo PORT: answer every datagram with "served-by <hostname>\n".
 * Built static by `pyswarm lab up` into the lab's nginx image so UDP services can be tested.
 * Runs as PID 1 in a container, where signals without a handler are ignored: handle them. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "udp-echo: bad port %s\n", argv[1]);
        return 2;
    }
    /* No SA_RESTART: recvfrom must return EINTR so the loop sees `stop`. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);

    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    char reply[300];
    int len = snprintf(reply, sizeof reply, "served-by %s\n", host);

    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    int v6 = fd >= 0;
    if (v6) {
        int off = 0; /* dual stack: also take IPv4 */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_addr = in6addr_any;
        a6.sin6_port = htons((unsigned short)port);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) != 0) {
            close(fd);
            v6 = 0;
        }
    }
    if (!v6) {
        fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a4;
        memset(&a4, 0, sizeof a4);
        a4.sin_family = AF_INET;
        a4.sin_addr.s_addr = htonl(INADDR_ANY);
        a4.sin_port = htons((unsigned short)port);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0) {
            perror("udp-echo: bind");
            return 1;
        }
    }
    /* A signal landing between the `stop` check and recvfrom would be missed; a short receive
     * timeout bounds that window. */
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fprintf(stderr, "udp-echo: listening on udp port %d as %s\n", port, host);

    char buf[2048];
    struct sockaddr_storage peer;
    while (!stop) {
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            perror("udp-echo: recvfrom");
            return 1;
        }
        sendto(fd, reply, (size_t)len, 0, (struct sockaddr *)&peer, plen);
    }
    close(fd);
    return 0;
}
