// The smallest task a Teal service can run: an HTTP/1.1 server on $HOST:$PORT that answers every
// request with 200 "ok" (keep-alive unless the client asks to close). Benchmarks/scale runs a
// thousand of them, so it is one process, one thread and a few pages of memory; teal-demo (23 MB
// resident in release) would measure the tasks instead of the node.
//
// Not a general server: it reads requests without bodies (health checks and GETs), at most
// MAX_CLIENTS connections and REQUEST_LIMIT bytes of headers each; beyond either it closes.

#define _GNU_SOURCE  // memmem

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_CLIENTS = 64, REQUEST_LIMIT = 8192 };

struct client {
  int fd;
  size_t used;
  char buffer[REQUEST_LIMIT];
};

static struct client clients[MAX_CLIENTS];
static volatile sig_atomic_t stopping = 0;

static void on_term(int signal_number) {
  (void)signal_number;
  stopping = 1;
}

static void drop(struct client *client) {
  close(client->fd);
  client->fd = -1;
  client->used = 0;
}

// Answers every complete request in the buffer; returns 0 to keep the connection, -1 to close it.
static int serve(struct client *client) {
  static const char answer[] =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
  char *end;
  while ((end = memmem(client->buffer, client->used, "\r\n\r\n", 4)) != NULL) {
    size_t length = (size_t)(end - client->buffer) + 4;
    int closing = memmem(client->buffer, length, "Connection: close", 17) != NULL ||
                  memmem(client->buffer, length, "connection: close", 17) != NULL;
    if (write(client->fd, answer, sizeof answer - 1) != (ssize_t)(sizeof answer - 1) || closing) {
      return -1;
    }
    memmove(client->buffer, client->buffer + length, client->used - length);
    client->used -= length;
  }
  return client->used == sizeof client->buffer ? -1 : 0;
}

int main(void) {
  const char *host = getenv("HOST") ? getenv("HOST") : "127.0.0.1";
  const char *port_text = getenv("PORT");
  long port = port_text ? strtol(port_text, NULL, 10) : 0;
  if (port < 1 || port > 65535) {
    fprintf(stderr, "tiny-task: PORT must be 1...65535, got %s\n", port_text ? port_text : "(unset)");
    return 2;
  }
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
    fprintf(stderr, "tiny-task: HOST must be an IPv4 address, got %s\n", host);
    return 2;
  }
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
      listen(listener, 64) != 0) {
    fprintf(stderr, "tiny-task: cannot listen on %s:%ld: %s\n", host, port, strerror(errno));
    return 1;
  }
  signal(SIGTERM, on_term);
  signal(SIGPIPE, SIG_IGN);
  for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = -1;

  struct pollfd fds[MAX_CLIENTS + 1];
  while (!stopping) {
    int count = 0;
    fds[count++] = (struct pollfd){.fd = listener, .events = POLLIN};
    for (int i = 0; i < MAX_CLIENTS; i++) {
      if (clients[i].fd >= 0) fds[count++] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
    }
    if (poll(fds, (nfds_t)count, 1000) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[0].revents & POLLIN) {
      int fd = accept(listener, NULL, NULL);
      if (fd >= 0) {
        int slot = -1;
        for (int i = 0; i < MAX_CLIENTS && slot < 0; i++) {
          if (clients[i].fd < 0) slot = i;
        }
        if (slot < 0) {
          close(fd);
        } else {
          clients[slot].fd = fd;
          clients[slot].used = 0;
        }
      }
    }
    for (int i = 1; i < count; i++) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      for (int j = 0; j < MAX_CLIENTS; j++) {
        struct client *client = &clients[j];
        if (client->fd != fds[i].fd) continue;
        ssize_t got = read(client->fd, client->buffer + client->used, sizeof client->buffer - client->used);
        if (got <= 0) {
          drop(client);
        } else {
          client->used += (size_t)got;
          if (serve(client) != 0) drop(client);
        }
        break;
      }
    }
  }
  return 0;
}
