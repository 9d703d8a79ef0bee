import Foundation

/// The one JSON configuration of the API: keys sorted (stable output, byte-comparable bodies),
/// slashes unescaped, dates as ISO-8601 UTC strings with milliseconds (`2026-12-01T08:10:29.123Z`).
public enum TealJSON {
  /// A new encoder with the API's configuration (JSONEncoder is not Sendable: one per use).
  public static func encoder(pretty: Bool = false) -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting =
      pretty
      ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
      : [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .custom { date, encoder in
      var container = encoder.singleValueContainer()
      try container.encode(formatDate(date))
    }
    return encoder
  }

  /// A new decoder with the API's configuration. Dates are read with or without fractional seconds.
  public static func decoder() -> JSONDecoder {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .custom { decoder in
      let container = try decoder.singleValueContainer()
      let text = try container.decode(String.self)
      guard let date = parseDate(text) else {
        throw DecodingError.dataCorruptedError(
          in: container, debugDescription: "expected an ISO-8601 time like 2026-12-01T08:10:29.123Z, got '\(text)'")
      }
      return date
    }
    return decoder
  }

  /// `value` as the API's JSON bytes.
  public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) throws -> Data {
    try encoder(pretty: pretty).encode(value)
  }

  /// A `T` from the API's JSON bytes.
  public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
    try decoder().decode(type, from: data)
  }

  private static let withMilliseconds = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
  private static let withoutFraction = Date.ISO8601FormatStyle(timeZone: .gmt)

  /// `date` as ISO-8601 UTC with milliseconds, rounded to the nearest millisecond.
  public static func formatDate(_ date: Date) -> String {
    let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
    let seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
    let fraction = milliseconds - seconds * 1000
    let whole = withoutFraction.format(Date(timeIntervalSince1970: TimeInterval(seconds)))
    // `whole` ends in "Z"; put the milliseconds before it.
    return String(whole.dropLast()) + "." + String(String(fraction + 1000).dropFirst()) + "Z"
  }

  /// An ISO-8601 time with or without fractional seconds, or nil.
  public static func parseDate(_ text: String) -> Date? {
    (try? withMilliseconds.parse(text)) ?? (try? withoutFraction.parse(text))
  }
}
