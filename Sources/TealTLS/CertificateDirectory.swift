import TealWire

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A directory holding a cluster's CA (`ca.pem`, `ca.key`) and node credentials (`<node>.pem`,
/// `<node>.key`). Private keys are created with mode 0600 and never overwritten: creating a file
/// that exists is refused, so `init` over an existing CA and `add` of an existing node fail rather
/// than silently replacing identities that running nodes rely on.
public struct CertificateDirectory: Sendable {
  public let path: String

  public init(path: String) {
    self.path = path
  }

  public var caCertificatePath: String { "\(path)/ca.pem" }
  public var caKeyPath: String { "\(path)/ca.key" }
  public func certificatePath(for node: NodeID) -> String { "\(path)/\(node.rawValue).pem" }
  public func keyPath(for node: NodeID) -> String { "\(path)/\(node.rawValue).key" }

  /// Creates the directory (mode 0700), a new CA, and credentials for each node.
  /// - Parameter addresses: IP addresses to put in each node's certificate; nodes not listed get
  ///   `127.0.0.1`.
  /// - Returns: the paths written.
  @discardableResult
  public static func initialize(
    at path: String, nodes: [NodeID], addresses: [NodeID: [String]] = [:]
  ) throws(CertificateDirectoryError) -> [String] {
    guard !nodes.isEmpty else { throw .invalidArgument("at least one node is needed") }
    if let duplicate = Dictionary(grouping: nodes, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
      throw .invalidArgument("node \(duplicate) is listed twice")
    }
    let directory = CertificateDirectory(path: path)
    try FileIO.makeDirectory(path)
    for existing in [directory.caCertificatePath, directory.caKeyPath] where FileIO.exists(existing) {
      throw .alreadyInitialized(existing)
    }
    let ca: (certificate: TLSCertificate, key: TLSPrivateKey)
    do { ca = try CertificateIssuer.makeCertificateAuthority() } catch { throw .openSSL(error) }
    var written: [String] = []
    // The key first: if it cannot be created exclusively, no certificate is left without its key.
    try FileIO.createExclusively(directory.caKeyPath, contents: pem(ca.key), mode: 0o600)
    written.append(directory.caKeyPath)
    try FileIO.createExclusively(directory.caCertificatePath, contents: pem(ca.certificate), mode: 0o644)
    written.append(directory.caCertificatePath)
    for node in nodes {
      written += try directory.issue(node, addresses: addresses[node] ?? ["127.0.0.1"], authority: ca)
    }
    return written
  }

  /// Issues credentials for one more node with the directory's existing CA.
  @discardableResult
  public func addNode(_ node: NodeID, addresses: [String] = ["127.0.0.1"]) throws(CertificateDirectoryError)
    -> [String]
  {
    let certificate: TLSCertificate
    let key: TLSPrivateKey
    do {
      certificate = try TLSCertificate(pem: try FileIO.read(caCertificatePath), source: caCertificatePath)
      key = try TLSPrivateKey(pem: try FileIO.read(caKeyPath), source: caKeyPath)
    } catch let error as CertificateDirectoryError {
      throw error
    } catch let error as OpenSSLError {
      throw .openSSL(error)
    } catch {
      throw .invalidArgument("\(error)")
    }
    return try issue(node, addresses: addresses, authority: (certificate, key))
  }

  /// Loads the TLS configuration of `node`: its certificate and key, trusting the directory's CA.
  public func configuration(for node: NodeID) throws(CertificateDirectoryError) -> TLSConfiguration {
    do {
      let ca = try TLSCertificate.parseAll(pem: try FileIO.read(caCertificatePath), source: caCertificatePath)
      let chain = try TLSCertificate.parseAll(
        pem: try FileIO.read(certificatePath(for: node)), source: certificatePath(for: node))
      let key = try TLSPrivateKey(pem: try FileIO.read(keyPath(for: node)), source: keyPath(for: node))
      guard chain[0].nodeID == node else {
        throw CertificateDirectoryError.invalidArgument(
          "\(certificatePath(for: node)) names node '\(chain[0].nodeID?.rawValue ?? "none")', not '\(node)'")
      }
      try Self.checkUsable(chain[0], path: certificatePath(for: node), now: Int64(time(nil)))
      return TLSConfiguration(trustRoots: ca, certificateChain: chain, privateKey: key)
    } catch let error as CertificateDirectoryError {
      throw error
    } catch let error as OpenSSLError {
      throw .openSSL(error)
    } catch {
      throw .invalidArgument("\(error)")
    }
  }

  /// Refuses, with a sentence naming the file, a node certificate this node could not use: a CA
  /// certificate, or one outside its validity period (peers would refuse it at every handshake).
  static func checkUsable(_ leaf: TLSCertificate, path: String, now: Int64) throws(CertificateDirectoryError) {
    if leaf.hasCABasicConstraint {
      throw .invalidArgument("\(path) is a CA certificate (CA:TRUE), not a node certificate")
    }
    if let notAfter = leaf.notAfter, notAfter <= now {
      throw .invalidArgument(
        "\(path): the node certificate expired at \(leaf.notAfterText); issue a new one with 'teal certs add' "
          + "and reload the node")
    }
    if let notBefore = leaf.notBefore, notBefore > now {
      throw .invalidArgument("\(path): the node certificate is not valid before \(leaf.notBeforeText)")
    }
  }

  private func issue(
    _ node: NodeID, addresses: [String], authority: (certificate: TLSCertificate, key: TLSPrivateKey)
  ) throws(CertificateDirectoryError) -> [String] {
    for existing in [certificatePath(for: node), keyPath(for: node)] where FileIO.exists(existing) {
      throw .nodeExists(node, existing)
    }
    let made: (certificate: TLSCertificate, key: TLSPrivateKey)
    do {
      made = try CertificateIssuer.makeNodeCertificate(
        .init(id: node, ipAddresses: addresses), authority: authority.certificate, authorityKey: authority.key)
    } catch {
      throw .openSSL(error)
    }
    try FileIO.createExclusively(keyPath(for: node), contents: Self.pem(made.key), mode: 0o600)
    try FileIO.createExclusively(
      certificatePath(for: node), contents: Self.pem(made.certificate), mode: 0o644)
    return [keyPath(for: node), certificatePath(for: node)]
  }

  private static func pem(_ key: TLSPrivateKey) throws(CertificateDirectoryError) -> [UInt8] {
    do { return try key.pemBytes() } catch { throw .openSSL(error) }
  }

  private static func pem(_ certificate: TLSCertificate) throws(CertificateDirectoryError) -> [UInt8] {
    do { return try certificate.pemBytes() } catch { throw .openSSL(error) }
  }
}

/// Why a certificate directory operation failed; each case names the file at fault.
public enum CertificateDirectoryError: Error, Equatable, Sendable, CustomStringConvertible {
  case alreadyInitialized(String)
  case nodeExists(NodeID, String)
  case io(path: String, operation: String, errno: Int32)
  case openSSL(OpenSSLError)
  case invalidArgument(String)

  public var description: String {
    switch self {
    case .alreadyInitialized(let path):
      "refusing to overwrite the existing CA at \(path); use 'teal certs add' to add nodes, or choose another directory"
    case .nodeExists(let node, let path): "node \(node) already has credentials at \(path)"
    case .io(let path, let operation, let code): "cannot \(operation) \(path): \(String(cString: strerror(code)))"
    case .openSSL(let error): "\(error)"
    case .invalidArgument(let message): message
    }
  }
}

/// Small POSIX file helpers: exclusive creation with a mode, whole-file reads, durable writes.
enum FileIO {
  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  static func makeDirectory(_ path: String) throws(CertificateDirectoryError) {
    var components: [Substring] = []
    for part in path.split(separator: "/", omittingEmptySubsequences: false) {
      components.append(part)
      let prefix = components.joined(separator: "/")
      if prefix.isEmpty || exists(prefix) { continue }
      if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
        throw .io(path: prefix, operation: "create directory", errno: errno)
      }
    }
  }

  /// Creates `path` with `mode`, failing if it exists; the data is fsynced before returning.
  static func createExclusively(_ path: String, contents: [UInt8], mode: mode_t) throws(CertificateDirectoryError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    if fd < 0 { throw .io(path: path, operation: "create", errno: errno) }
    defer { close(fd) }
    // The umask may have narrowed the mode; keys must be exactly 0600 and certificates readable.
    if fchmod(fd, mode) != 0 { throw .io(path: path, operation: "set permissions of", errno: errno) }
    var offset = 0
    while offset < contents.count {
      let written = contents.withUnsafeBytes { raw in Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset) }
      if written < 0 {
        if errno == EINTR { continue }
        throw .io(path: path, operation: "write", errno: errno)
      }
      offset += written
    }
    if fsync(fd) != 0 { throw .io(path: path, operation: "fsync", errno: errno) }
  }

  static func read(_ path: String) throws(CertificateDirectoryError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw .io(path: path, operation: "open", errno: errno) }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
      let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if count < 0 {
        if errno == EINTR { continue }
        throw .io(path: path, operation: "read", errno: errno)
      }
      if count == 0 { return result }
      result += chunk[0..<count]
      if result.count > 1 << 20 { throw .io(path: path, operation: "read (file larger than 1 MiB)", errno: EFBIG) }
    }
  }
}
