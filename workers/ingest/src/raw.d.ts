// Vite's `?raw` imports (tests read committed text files: the docs).
declare module "*?raw" {
  const content: string;
  export default content;
}
