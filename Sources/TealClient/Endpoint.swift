import NIOCore

/// One node's API address, parsed from `http://127.0.0.1:7070` or `https://127.0.0.1:7070`.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
  public enum Scheme: String, Sendable {
    case http
    case https
  }

  public var scheme: Scheme
  public var host: String
  public var port: Int

  public init(scheme: Scheme = .http, host: String, port: Int) {
    self.scheme = scheme
    self.host = host
    self.port = port
  }

  /// Parses `http://host:port` (a trailing `/` is allowed; no path, query or user info).
  public init(url text: String) throws(TealClientError) {
    let trimmed = text.hasSuffix("/") ? String(text.dropLast()) : text
    let scheme: Scheme
    let rest: Substring
    if trimmed.hasPrefix("http://") {
      scheme = .http
      rest = trimmed.dropFirst("http://".count)
    } else if trimmed.hasPrefix("https://") {
      scheme = .https
      rest = trimmed.dropFirst("https://".count)
    } else {
      throw .invalidEndpoint(text, reason: "expected http://HOST:PORT, e.g. http://127.0.0.1:7070")
    }
    if rest.contains("/") || rest.contains("?") || rest.contains("@") {
      throw .invalidEndpoint(text, reason: "expected only HOST:PORT after the scheme, no path, query or user")
    }
    var host = rest
    var port = scheme == .http ? 80 : 443
    if rest.hasPrefix("[") {
      guard let close = rest.firstIndex(of: "]") else {
        throw .invalidEndpoint(text, reason: "unclosed '[' in an IPv6 address")
      }
      host = rest[rest.index(after: rest.startIndex)..<close]
      let after = rest[rest.index(after: close)...]
      if after.hasPrefix(":") {
        guard let parsed = Int(after.dropFirst()), (1...65535).contains(parsed) else {
          throw .invalidEndpoint(text, reason: "the port must be a number in 1...65535")
        }
        port = parsed
      } else if !after.isEmpty {
        throw .invalidEndpoint(text, reason: "unexpected '\(after)' after the IPv6 address")
      }
    } else if let colon = rest.lastIndex(of: ":") {
      guard let parsed = Int(rest[rest.index(after: colon)...]), (1...65535).contains(parsed) else {
        throw .invalidEndpoint(text, reason: "the port must be a number in 1...65535")
      }
      host = rest[..<colon]
      port = parsed
    }
    guard !host.isEmpty else { throw .invalidEndpoint(text, reason: "no host") }
    self.scheme = scheme
    self.host = String(host)
    self.port = port
  }

  /// `host:port` as the `Host` header and messages show it.
  public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  public var description: String { "\(scheme.rawValue)://\(authority)" }
}

/// The security of the client's connections: plain TCP (``PlaintextSecurity``) or TLS with
/// TealTLS, pinning the cluster CA (``APITLSSecurity``).
public protocol ClientConnectionSecurity: Sendable {
  /// The scheme this security serves (`.https` for TLS).
  var scheme: Endpoint.Scheme { get }

  /// Adds the handlers that secure `channel`, a fresh connection to `endpoint`, in front of the
  /// HTTP codec. Called on the channel's event loop, before any byte is written.
  func secure(_ channel: any Channel, endpoint: Endpoint) throws

  /// Completes once the connection is secured (the TLS handshake passed); a failure means the
  /// request was never sent. Plain TCP: at once.
  func established(_ channel: any Channel) -> EventLoopFuture<Void>
}

extension ClientConnectionSecurity {
  public func established(_ channel: any Channel) -> EventLoopFuture<Void> {
    channel.eventLoop.makeSucceededVoidFuture()
  }
}

/// Plain TCP.
public struct PlaintextSecurity: ClientConnectionSecurity {
  public init() {}
  public var scheme: Endpoint.Scheme { .http }
  public func secure(_ channel: any Channel, endpoint: Endpoint) throws {}
}
