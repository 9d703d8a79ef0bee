// What a node loads from disk before it starts: its TLS identity, the API token, directories.

import Foundation
import TealDeploy
import TealTLS
import TealWire

/// Why a node could not start. Each case names the file or setting to fix.
public enum NodeStartError: Error, Sendable, CustomStringConvertible {
  case configuration(NodeConfigurationError)
  case credentials(file: String, reason: String)
  case token(file: String, reason: String)
  case directory(String, reason: String)
  case component(String, reason: String)

  public var description: String {
    switch self {
    case .configuration(let error): error.description
    case .credentials(let file, let reason): "cannot load the node's TLS credentials from \(file): \(reason)"
    case .token(let file, let reason): "cannot read the API token \(file): \(reason)"
    case .directory(let path, let reason): "cannot use the directory \(path): \(reason)"
    case .component(let name, let reason): "cannot start \(name): \(reason)"
    }
  }
}

enum NodeResources {
  /// Shortest token accepted: shorter ones are guessable.
  static let minimumTokenLength = 32
  static let maximumTokenFileBytes = 4096

  /// The node's TLS context: the cluster CA as the only trust root, and the node's certificate,
  /// which must name this node.
  static func tlsContext(for configuration: NodeConfiguration) throws(NodeStartError) -> TLSContext {
    let directory = CertificateDirectory(path: configuration.certificateDirectory)
    let caPath = directory.caCertificatePath
    let certificatePath = directory.certificatePath(for: configuration.node)
    let keyPath = directory.keyPath(for: configuration.node)
    let roots: [TLSCertificate]
    let chain: [TLSCertificate]
    let key: TLSPrivateKey
    do { roots = try TLSCertificate.parseAll(pem: try read(caPath), source: caPath) } catch {
      throw .credentials(file: caPath, reason: "\(error)")
    }
    do { chain = try TLSCertificate.parseAll(pem: try read(certificatePath), source: certificatePath) } catch {
      throw .credentials(file: certificatePath, reason: "\(error)")
    }
    do { key = try TLSPrivateKey(pem: try read(keyPath), source: keyPath) } catch {
      throw .credentials(file: keyPath, reason: "\(error)")
    }
    guard let leaf = chain.first else { throw .credentials(file: certificatePath, reason: "holds no certificate") }
    guard leaf.nodeID == configuration.node else {
      throw .credentials(
        file: certificatePath,
        reason: "the certificate names node \(leaf.nodeID?.description ?? "none"), not \(configuration.node)")
    }
    do {
      return try TLSContext(
        configuration: TLSConfiguration(trustRoots: roots, certificateChain: chain, privateKey: key))
    } catch {
      throw .credentials(file: certificatePath, reason: "\(error)")
    }
  }

  /// The cluster's id: `teal-` and the first 32 hex digits of the SHA-256 of the cluster CA's
  /// certificate file. Every node of a cluster shares the CA, so the id needs no configuration; a
  /// peer of another cluster is refused in the transport's hello, and a data directory of another
  /// cluster is refused at start.
  static func clusterID(for configuration: NodeConfiguration) throws(NodeStartError) -> String {
    let path = CertificateDirectory(path: configuration.certificateDirectory).caCertificatePath
    let bytes: [UInt8]
    do { bytes = try read(path) } catch { throw .credentials(file: path, reason: "\(error)") }
    return "teal-" + SHA256.hexDigest(bytes).prefix(32)
  }

  /// The bearer token: the file's first line. The file must not be readable by others.
  static func token(for configuration: NodeConfiguration) throws(NodeStartError) -> String {
    let path = configuration.tokenFile
    var info = stat()
    guard stat(path, &info) == 0 else { throw .token(file: path, reason: String(cString: strerror(errno))) }
    guard info.st_mode & 0o077 == 0 else {
      throw .token(file: path, reason: "its mode is \(String(info.st_mode & 0o777, radix: 8)); make it 0600")
    }
    let bytes: [UInt8]
    do { bytes = try read(path) } catch { throw .token(file: path, reason: "\(error)") }
    guard bytes.count <= maximumTokenFileBytes else { throw .token(file: path, reason: "larger than 4 KiB") }
    let token = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
    guard token.count >= minimumTokenLength else {
      throw .token(file: path, reason: "the token must be at least \(minimumTokenLength) characters")
    }
    return token
  }

  static func makeDirectory(_ path: String) throws(NodeStartError) {
    do {
      try FileManager.default.createDirectory(
        atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    } catch {
      throw .directory(path, reason: error.localizedDescription)
    }
  }

  private static func read(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
  }
}

// MARK: - A lost identity

extension NodeResources {
  /// The file that marks a data directory whose node id lost its data while it was a voter.
  static func identityLostFile(_ configuration: NodeConfiguration) -> String {
    configuration.dataDirectory + "/IDENTITY-LOST"
  }

  static func markIdentityLost(_ configuration: NodeConfiguration) {
    // Best effort: the node stops either way; without the marker a later start with this (now
    // non-empty) directory would not know.
    _ = FileManager.default.createFile(
      atPath: identityLostFile(configuration),
      contents: Data(
        ("\(configuration.node) joined with an empty data directory while the cluster had it as a voter; "
          + "it must not vote again: replace it with `teal cluster replace-node \(configuration.node)`\n").utf8))
  }

  /// Refuses to start a node whose identity was marked lost.
  static func checkIdentityNotLost(_ configuration: NodeConfiguration) throws(NodeStartError) {
    let path = identityLostFile(configuration)
    guard FileManager.default.fileExists(atPath: path) else { return }
    throw .directory(
      configuration.dataDirectory,
      reason:
        "\(path): \(configuration.node) lost its data while it was a voter and must not vote under this id again; "
        + "replace it with `teal cluster replace-node \(configuration.node)` (a new id)")
  }
}
